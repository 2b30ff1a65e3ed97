"""Tensor ring against MPS on the bundled model: accuracy per parameter at about 3x.

Two T-Nets of the bundled model, each converted, re-estimated and fine-tuned alike with
``tcompress finetune --recalibrate`` and evaluated with ``tcompress evaluate`` on held-out
synthetic images:

- MPS with ``--ratio 3`` (bonds allocated on the TT-SVD bound);
- a tensor ring with a ring bond of 2 at about the same size (``--ranks 1,8,24,48,96,9,3,2``:
  TR-SVD opens the ring at the stack mode, which holds the ring bond times bond 1).

A tensor ring with ``--ratio 3`` has a ring bond of 1: it is the MPS network itself (a test checks
that the two conversions agree), so it is not run again.

    python benchmarks/bench_tensor_ring.py --steps 400 --lr 1.5e-3 --schedule cosine \\
        --precision bf16 --train-samples 3000 --cache --workers 2 \\
        --record docs/records/tensor_ring.json

Writes the record (``--record``) with every figure the write-up quotes.
"""

from __future__ import annotations

import argparse
import json
import os

from bench_finetune import pckh, tcompress, write_text  # the same runs as the fine-tuning record

RUNS = {
    "mps --ratio 3": ["--method", "mps", "--ratio", "3"],
    "tr ring bond 2": ["--method", "tr", "--ranks", "1,8,24,48,96,9,3,2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--out", default="runs/tensor-ring")
    parser.add_argument("--record", default=None)
    args = parser.parse_args()

    from tcompress.models import pretrained_path

    os.makedirs(args.out, exist_ok=True)
    dense = str(pretrained_path())
    common = [
        *("--data", "synthetic", "--steps", args.steps, "--lr", args.lr),
        *("--schedule", args.schedule, "--precision", args.precision, "--workers", args.workers),
        *("--train-samples", args.train_samples, "--eval-samples", 8, "--recalibrate", 512),
        *(["--cache"] if args.cache else []),
    ]
    record = {"settings": vars(args), "original": pckh(dense, args.val_samples), "runs": {}}
    for name, options in RUNS.items():
        converted = os.path.join(args.out, name.replace(" ", "_").replace("-", "") + ".pt")
        summary, _ = tcompress("convert", dense, *options, "-o", converted, "--force")
        before = pckh(converted, args.val_samples)
        tuned = converted.replace(".pt", "-ft.pt")
        _, seconds = tcompress("finetune", converted, *common, "-o", tuned, "--force")
        after = pckh(tuned, args.val_samples)
        record["runs"][name] = {
            "ranks": summary["ranks"],
            "params_after": summary["params_after"],
            "compression_ratio": summary["compression_ratio"],
            "relative_error": summary["relative_error"],
            "pckh_converted": before,
            "pckh_finetuned": after,
            "finetune_minutes": seconds / 60,
        }
        print(f"{name}: {summary['compression_ratio']:.2f}x, PCKh {before:.1f} -> {after:.1f}")
    if args.record:
        from tcompress.checkpoint import atomic_write

        text = json.dumps(record, indent=2)
        atomic_write(args.record, lambda tmp: write_text(tmp, text))


if __name__ == "__main__":
    main()
