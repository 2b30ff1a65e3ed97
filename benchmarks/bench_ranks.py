"""Ranks chosen by ``--ratio`` against uniform channel ranks, at the same compression.

For each target ratio, the automatic Tucker allocation (greedy on the HOSVD error bound over all
eight modes) is compared with the usual hand choice, f_in = f_out = r reduced alone (r the
largest that reaches the ratio), on the bundled pretrained model (or ``--checkpoint``): relative
reconstruction error of W, and PCKh@0.5 on the held-out synthetic split before any fine-tuning.

    python benchmarks/bench_ranks.py --ratios 2 3 4
"""

from __future__ import annotations

import argparse

import torch

import tcompress
from tcompress.data import Materialized, SyntheticPose
from tcompress.models import pretrained_path
from tcompress.train import evaluate_pck


def uniform(checkpoint: str, ratio: float):
    """The T-Net with f_in = f_out = r, r the largest whose ratio reaches ``ratio``."""
    full = tcompress.convert(checkpoint, ranks="full")
    size = full.summary["mode_sizes"][4]
    for r in range(size, 0, -1):
        tnet = tcompress.convert(checkpoint, ranks={"f_in": r, "f_out": r})
        if tnet.summary["compression_ratio"] >= ratio:
            return tnet
    raise SystemExit(f"ratio {ratio} is out of reach with channel ranks alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--ratios", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    parser.add_argument("--val-samples", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(2)
    checkpoint = args.checkpoint or str(pretrained_path())
    val = Materialized(SyntheticPose(args.val_samples, 256, 64, split="val"))
    original = evaluate_pck(tcompress.load(checkpoint).eval(), val)["mean"]
    print(f"original PCKh@0.5 {original:.1f}%")
    print("| ratio | choice | ranks | achieved | relative error of W | PCKh before fine-tuning |")
    print("|---|---|---|---|---|---|")
    for ratio in args.ratios:
        for name, tnet in (
            ("--ratio (automatic)", tcompress.convert(checkpoint, ratio=ratio)),
            ("f_in = f_out alone", uniform(checkpoint, ratio)),
        ):
            s = tnet.summary
            score = evaluate_pck(tnet.eval(), val)["mean"]
            print(
                f"| {ratio:g}x | {name} | {','.join(map(str, s['ranks']))} | "
                f"{s['compression_ratio']:.2f}x | {s['relative_error']:.4f} | {score:.1f}% |",
                flush=True,
            )


if __name__ == "__main__":
    main()
