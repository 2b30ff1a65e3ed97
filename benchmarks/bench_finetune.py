"""Accuracy after compression, on the bundled model, with the command line a user would run.

For each Tucker T-Net (about 2x and 3x whole-network compression): convert, re-estimate
BatchNorm and fine-tune with ``tcompress finetune --recalibrate`` for a fixed number of steps,
and evaluate with ``tcompress evaluate`` on the synthetic test split (``--split``). The uncompressed
model gets the same extra fine-tuning (same steps, data and settings), so that every T-Net is
compared with a baseline that trained as long. One more run fine-tunes the 3x T-Net by
distillation alone, from a folder of unlabeled images (PNG files rendered from the synthetic
training split, their labels thrown away).

    python benchmarks/bench_finetune.py --steps 860 --distill-steps 780 --lr 1.5e-3 \
        --schedule cosine --precision bf16 --train-samples 3000 --cache --workers 2

Prints the record and writes it to ``--record`` (default docs/records/finetune.json, the README's
fine-tuning table) and to ``results.json`` in ``--out``; minutes are wall-clock times of the
fine-tuning command on this machine.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from recipes import timed_json as tcompress
from recipes import write_text

from tcompress.vocabulary import PRECISIONS, SCHEDULES

#: About 2x and 3x whole-network compression of the bundled model. 2x reduces the channel and
#: kernel modes; 3x keeps the channels whole and reduces the depth mode (4 levels -> rank 2) and
#: the kernel modes (3x3 -> 2x2), which converts higher than the ranks ``--ratio 3`` picks
#: (README, Choosing ranks; docs/records/ranks.json).
RANKS = {"2x": "2,4,3,2,30,30,2,2", "3x": "2,2,3,2,32,32,2,2"}


def pckh(model: str, samples: int, split: str) -> float:
    out, _ = tcompress("evaluate", model, "--data", "synthetic", "--split", split, "-n", samples)
    return out["pckh"]["mean"]


def unlabeled_folder(path: str, count: int, seed: int) -> None:
    """PNG files of synthetic training images, without their labels."""
    from tcompress.data import SyntheticPose, write_image

    os.makedirs(path, exist_ok=True)
    data = SyntheticPose(count, 256, 64, seed=seed + 1, split="train")
    for i in range(count):
        image = np.ascontiguousarray(data.scene(i).image.transpose(1, 2, 0))
        write_image(os.path.join(path, f"{i:05d}.png"), (image * 255 + 0.5).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--schedule", default="step", choices=SCHEDULES)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument(
        "--train-samples", type=int, default=None, help="[default: the data set's own size]"
    )
    parser.add_argument("--cache", action="store_true", help="keep the training samples in memory")
    parser.add_argument(
        "--distill-steps",
        type=int,
        default=None,
        help="steps of the distillation run, whose steps cost more (the teacher's forward) "
        "[default: --steps]",
    )
    parser.add_argument("--recalibrate", type=int, default=512)
    parser.add_argument("--val-samples", type=int, default=1000, help="images scored")
    parser.add_argument("--split", default="test", choices=("val", "test"), help="the split scored")
    parser.add_argument("--unlabeled", type=int, default=2000, help="images in the folder")
    parser.add_argument("--out", default="runs/finetune")
    parser.add_argument("--record", default="docs/records/finetune.json")
    parser.add_argument("--checkpoint", default=None, help="[default: the bundled model]")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from tcompress.models import pretrained_path

    os.makedirs(args.out, exist_ok=True)
    dense = args.checkpoint or str(pretrained_path())
    common = [
        "--data",
        "synthetic",
        "--steps",
        args.steps,
        "--lr",
        args.lr,
        "--schedule",
        args.schedule,
        "--batch-size",
        args.batch_size,
        "--eval-samples",
        8,
        "--workers",
        args.workers,
        "--precision",
        args.precision,
        *(["--train-samples", args.train_samples] if args.train_samples else []),
        *(["--cache"] if args.cache else []),
    ]
    rows = []
    results = {
        "steps": args.steps,
        "lr": args.lr,
        "schedule": args.schedule,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "train_samples": args.train_samples,
        "cache": args.cache,
        "distill_steps": args.distill_steps or args.steps,
        "recalibrate": args.recalibrate,
        "val_samples": args.val_samples,
        "split": args.split,
        "unlabeled": args.unlabeled,
        "runs": {},
    }

    def run(name: str, source: str, extra: list, before: float | None) -> None:
        out = os.path.join(args.out, f"{name}.pt")
        summary, seconds = tcompress("finetune", source, *common, *extra, "-o", out, "--force")
        after = pckh(out, args.val_samples, args.split)
        results["runs"][name] = {
            "before": before,
            "after": after,
            "minutes": seconds / 60,
            "train_minutes": summary["seconds"] / 60,
        }
        rows.append((name, before, after, summary["seconds"] / 60))
        print(
            f"{name}: PCKh {before} -> {after:.2f} in {summary['seconds'] / 60:.1f} min", flush=True
        )

    base = pckh(dense, args.val_samples, args.split)
    results["original"] = base
    run("dense", dense, [], base)
    for tag, ranks in RANKS.items():
        tnet = os.path.join(args.out, f"converted-{tag}.pt")
        summary, _ = tcompress(
            "convert", dense, "--ranks", ranks, "--forward", "reconstructed", "-o", tnet, "--force"
        )
        converted = pckh(tnet, args.val_samples, args.split)
        results[f"convert-{tag}"] = {
            "ranks": ranks,
            "ratio": summary["compression_ratio"],
            "pckh": converted,
        }
        run(f"tnet-{tag}", tnet, ["--recalibrate", args.recalibrate], converted)
    folder = os.path.join(args.out, "unlabeled")
    if not os.path.isdir(folder):
        unlabeled_folder(folder, args.unlabeled, seed=0)
    tnet = os.path.join(args.out, "converted-3x.pt")
    run(
        "tnet-3x-distill",
        tnet,
        [
            "--data",
            folder,
            "--distill-from",
            dense,
            "--recalibrate",
            args.recalibrate,
            "--steps",
            args.distill_steps or args.steps,
        ],
        results["convert-3x"]["pckh"],
    )
    from tcompress.checkpoint import atomic_write

    text = json.dumps(results, indent=1)
    for path in (os.path.join(args.out, "results.json"), args.record):
        atomic_write(path, lambda tmp: write_text(tmp, text))
    print(text)


if __name__ == "__main__":
    main()
