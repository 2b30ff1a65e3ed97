"""Which start converts best: plain HOSVD, the whitened HOSVD, or either refined on the data?

For each rank set of the bundled model (the 3x hand choice and the error bound's 3x choice, the
2x data-aware choice, and one that truncates the channels), four starts:

- ``hosvd``: ``tcompress convert --ranks R`` (W's own HOSVD);
- ``whitened``: ``--whiten synthetic`` (:mod:`tcompress.passes.whiten`): W weighted on its truncated
  kernel modes by the block convolutions' input moments, decomposed, the weights taken off;
- ``whitened-channels``: the truncated channel modes alone weighted (not the taps);
- ``whitened-all``: all four kernel modes weighted, truncated or not;
- ``hosvd+fit`` and ``whitened+fit``: each followed by the data-aware L-BFGS fit
  (``--refine-data synthetic``).

For each: ||W - W_hat|| / ||W||, the block convolutions' relative output error on the images the
moments came from, and the converted network's PCKh on the validation split with BatchNorm
re-estimated on 512 training images. ``--finetune 'RANKS:START;...'`` also fine-tunes those with
the README's 5-minute recipe (the command lines a user runs) and scores the validation and test
splits.

    python benchmarks/bench_whitening.py                  # the starts, minutes
    python benchmarks/bench_whitening.py --finetune '2,4,3,2,29,32,2,2:whitened'

Runs are resumable: rows already in the record are kept unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import FIVE_MINUTE_CLI as RECIPE  # noqa: E402
from recipes import run_json as tcompress  # noqa: E402

RANK_SETS = (
    "2,2,3,2,32,32,2,2",
    "2,4,3,2,31,32,2,1",
    "2,4,3,2,29,32,2,2",
    "2,4,3,2,20,20,3,3",
)
STARTS = ("hosvd", "whitened", "whitened-channels", "whitened-all", "hosvd+fit", "whitened+fit")


#: ``tcompress convert`` options of each start.
CONVERT = {
    "hosvd": [],
    "whitened": ["--whiten", "synthetic"],
    "hosvd+fit": ["--refine-data", "synthetic"],
    "whitened+fit": ["--whiten", "synthetic", "--refine-data", "synthetic"],
}


def start(name: str, ranks: list[int], W, stats):
    """The shared tensor of one start, fitted to W."""
    from tcompress.methods import get
    from tcompress.passes.data_aware import refine_to_data
    from tcompress.passes.whiten import whitening

    tucker = get("tucker")
    base = name.removesuffix("+fit")
    with torch.no_grad():
        if base == "hosvd":
            tensor = tucker.decompose(W, ranks, n_iter=0, seed=0).tensor
        else:
            everything = base == "whitened-all"
            weights = whitening(
                stats,
                W.shape,
                None if everything else ranks,
                channels_only=base == "whitened-channels",
            )
            tensor = tucker.decompose(weights.apply(W), ranks, n_iter=0, seed=0).tensor
            weights.undo(tensor)
    if name.endswith("+fit"):
        refine_to_data(tensor, W, stats)
    return tensor


def measure(tensor, ranks, W, stats, bundled, train, val) -> dict:
    from torch.utils.data import DataLoader, Subset

    from tcompress.conversion import convert
    from tcompress.evaluation.run import pckh_of
    from tcompress.passes.data_aware import output_error
    from tcompress.train import recalibrate_batchnorm

    with torch.no_grad():
        W_hat = tensor.full()
        error, total = output_error(W_hat, W, stats)
        weight_error = float(torch.linalg.norm(W_hat - W) / torch.linalg.norm(W))
    model = convert(bundled, ranks=ranks)
    with torch.no_grad():
        for mine, theirs in zip(model.tensor.parameters(), tensor.parameters()):
            mine.copy_(theirs)
    recalibrate_batchnorm(model, DataLoader(Subset(train, range(512)), batch_size=16))
    model.eval()
    return {
        "ratio": model.summary["compression_ratio"],
        "weight_error": weight_error,
        "output_error": float(error / total),
        "converted_pckh": float(pckh_of(model, val, 16).result().mean),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank-sets", default=";".join(RANK_SETS), help="';'-separated")
    parser.add_argument("--starts", default=",".join(STARTS))
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--stat-images", type=int, default=256)
    parser.add_argument(
        "--finetune", default="", help="';'-separated RANKS:START pairs to fine-tune alike"
    )
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--fresh", action="store_true", help="Ignore what the record holds.")
    parser.add_argument("--work", default="runs/whitening")
    parser.add_argument("-o", "--output", default="docs/records/whitening.json")
    args = parser.parse_args()

    from tcompress.checkpoint import atomic_write
    from tcompress.conversion import _statistics
    from tcompress.data import Materialized, make_dataset
    from tcompress.models import pretrained_path
    from tcompress.source import read_source

    os.makedirs(args.work, exist_ok=True)
    settings = {
        "recipe": " ".join(RECIPE),
        "val_samples": args.val_samples,
        "stat_images": args.stat_images,
    }
    record = {"settings": settings, "starts": {}, "finetuned": {}}
    if os.path.exists(args.output) and not args.fresh:
        with open(args.output) as f:
            old = json.load(f)
        if old.get("settings") == settings:
            record = old

    def write() -> None:
        text = json.dumps(record, indent=1)
        atomic_write(args.output, lambda tmp: open(tmp, "w").write(text + "\n"))

    bundled = str(pretrained_path())
    src = read_source(bundled)
    W = src.stacked()
    (stats,) = _statistics(src, W.device, "synthetic", args.stat_images, 0)  # one tensor
    val = Materialized(make_dataset("synthetic", "val", 256, 64, n=args.val_samples))
    train = make_dataset("synthetic", "train", 256, 64, n=512)
    for name in [r.strip() for r in args.rank_sets.split(";") if r.strip()]:
        ranks = [int(v) for v in name.split(",")]
        rows = record["starts"].setdefault(name, {})
        for how in [s.strip() for s in args.starts.split(",") if s.strip()]:
            if how in rows:
                continue
            started = time.perf_counter()
            tensor = start(how, ranks, W, stats)
            rows[how] = measure(tensor, ranks, W, stats, bundled, train, val)
            rows[how]["seconds"] = time.perf_counter() - started
            write()
            print(f"{name} {how}: {rows[how]}", flush=True)

    for pair in [p.strip() for p in args.finetune.split(";") if p.strip()]:
        name, how = pair.split(":")
        if "test_pckh" in record["finetuned"].get(pair, {}):
            continue
        print(f"{pair}: converting and fine-tuning", flush=True)
        tag = f"{name.replace(',', '-')}-{how}"
        source = os.path.join(args.work, f"{tag}.pt")
        tcompress("convert", bundled, "--ranks", name, *CONVERT[how], "-o", source, "--force")
        tuned = os.path.join(args.work, f"{tag}-ft.pt")
        started = time.perf_counter()
        tcompress("finetune", source, *RECIPE, "-o", tuned, "--force")
        row = {"minutes": (time.perf_counter() - started) / 60}
        for split in ("val", "test"):
            out = tcompress(
                "evaluate", tuned, "--data", "synthetic", "--split", split,
                "-n", args.test_samples,
            )  # fmt: skip
            row[f"{split}_pckh"] = out["pckh"]["mean"]
        record["finetuned"][pair] = row
        write()
        print(f"{pair}: {row}", flush=True)
    write()
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
