"""Ranks chosen by ``--ratio`` against uniform channel ranks, at the same compression.

For each target ratio, the automatic Tucker allocation (greedy on the HOSVD error bound over all
eight modes) is compared with the usual hand choice, f_in = f_out = r reduced alone (r the
largest that reaches the ratio), on the bundled pretrained model (or ``--checkpoint``): relative
reconstruction error of W, and PCKh@0.5 on the held-out synthetic split before any fine-tuning.
``--also RANKS`` adds hand-picked Tucker ranks (repeatable).

    python benchmarks/bench_ranks.py --ratios 2 3 4 --val-samples 300 --also 2,2,3,2,32,32,2,2

Prints the table and writes the record (``--record``, default docs/records/ranks.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import tcompress
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
    import tcompress

import torch  # noqa: E402

from tcompress.checkpoint import atomic_write  # noqa: E402
from tcompress.data import Materialized, SyntheticPose  # noqa: E402
from tcompress.models import pretrained_path  # noqa: E402
from tcompress.train import evaluate_pck  # noqa: E402


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
    parser.add_argument("--also", action="append", default=[], metavar="RANKS")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", type=Path, default=ROOT / "docs" / "records" / "ranks.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or str(pretrained_path())
    val = Materialized(SyntheticPose(args.val_samples, 256, 64, split="val"))
    original = evaluate_pck(tcompress.load(checkpoint).eval(), val)["mean"]
    record = {
        "settings": {
            "checkpoint": args.checkpoint or "bundled",
            "ratios": args.ratios,
            "val_samples": args.val_samples,
            "also": args.also,
            "threads": args.threads,
        },
        "original": original,
        "rows": [],
    }
    print(f"original PCKh@0.5 {original:.1f}%")
    print("| target | choice | ranks | ratio | relative error of W | PCKh converted |")
    print("|---|---|---|---|---|---|")
    choices = [
        (ratio, choice, make)
        for ratio in args.ratios
        for choice, make in (
            ("ratio", lambda r=ratio: tcompress.convert(checkpoint, ratio=r)),
            ("f_in = f_out", lambda r=ratio: uniform(checkpoint, r)),
        )
    ]
    choices += [
        (None, "given", lambda r=ranks: tcompress.convert(checkpoint, ranks=r))
        for ranks in args.also
    ]
    for target, choice, make in choices:
        tnet = make()
        s = tnet.summary
        score = evaluate_pck(tnet.eval(), val)["mean"]
        row = {
            "target": target,
            "choice": choice,
            "ranks": list(s["ranks"]),
            "compression_ratio": s["compression_ratio"],
            "relative_error": s["relative_error"],
            "pckh": score,
        }
        record["rows"].append(row)
        print(
            f"| {'-' if target is None else f'{target:g}x'} | {choice} | "
            f"{','.join(map(str, s['ranks']))} | {s['compression_ratio']:.2f}x | "
            f"{s['relative_error']:.4f} | {score:.1f}% |",
            flush=True,
        )
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(args.record, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
