"""Deployment figures of the paper configuration: ONNX exports measured in ONNX Runtime, same run.

Builds the paper-configuration hourglass (seeded random weights and BatchNorm statistics), converts
it to Tucker T-Nets at ranks (4,4,3,2,64,64,3,3) and (4,4,3,2,32,32,3,3) and to an MPS T-Net at
bonds (4,16,48,96,64,9,3), exports every model with ``tcompress.export_onnx`` (validated against
PyTorch) and measures all files with ``tcompress bench``'s library function: latency (median of
interleaved rounds), file size, parameters and multiply-adds, each as a ratio to the uncompressed
network's own export at the same input size.

Targets (exit status 1 if missed): the fused dense form no slower than the original (ratio >= 1 /
1.05); the factorized form at ranks 64 at least 1.5x faster, at ranks 32 at least 2.0x; the
factorized file at ranks 64 at most 0.4x the original's size.

Usage::

    python benchmarks/bench_export.py [--input-size 256] [--repeats 20] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

try:
    import tcompress
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tcompress

from tcompress.export.bench import bench_onnx  # noqa: E402
from tcompress.export.onnx import export_onnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import paper_hourglass  # noqa: E402

MODELS = (
    # name, method, ranks, form
    ("original", None, None, "dense"),
    ("tucker-r64-dense", "tucker", (4, 4, 3, 2, 64, 64, 3, 3), "dense"),
    ("tucker-r64-factorized", "tucker", (4, 4, 3, 2, 64, 64, 3, 3), "factorized"),
    ("tucker-r32-factorized", "tucker", (4, 4, 3, 2, 32, 32, 3, 3), "factorized"),
    ("mps-factorized", "mps", (4, 16, 48, 96, 64, 9, 3), "factorized"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = paper_hourglass()
    tmp = tempfile.mkdtemp(prefix="tcompress-bench-export-")
    paths, worst = [], 0.0
    for name, method, ranks, form in MODELS:
        source = model if method is None else tcompress.convert(model, method, ranks)
        path = os.path.join(tmp, f"{name}.onnx")
        report = export_onnx(source, path, form, input_size=args.input_size)
        worst = max(worst, report.validation.max_abs_diff)
        paths.append(path)
    results = bench_onnx(
        paths, input_size=args.input_size, threads=args.threads, repeats=args.repeats
    )
    by_name = {name: r for (name, *_), r in zip(MODELS, results)}
    missed = []
    if by_name["tucker-r64-dense"].speedup < 1 / 1.05:
        missed.append("fused dense form slower than the original by more than 5%")
    if by_name["tucker-r64-factorized"].speedup < 1.5:
        missed.append("factorized ranks 64 < 1.5x faster")
    if by_name["tucker-r32-factorized"].speedup < 2.0:
        missed.append("factorized ranks 32 < 2.0x faster")
    if by_name["tucker-r64-factorized"].size_ratio < 1 / 0.4:
        missed.append("factorized ranks 64 file > 0.4x the original's size")
    if args.json:
        print(
            json.dumps(
                {
                    "results": {n: r.to_dict() for n, r in by_name.items()},
                    "worst_validation_abs_diff": worst,
                    "missed": missed,
                },
                indent=2,
            )
        )
    else:
        print(
            f"paper configuration, {args.input_size}x{args.input_size}, batch 1, "
            f"{args.threads} threads, median of {args.repeats} interleaved rounds; ratios are "
            "original / model (larger = smaller or faster)"
        )
        print(
            f"{'model':24} {'params':>11} {'size x':>7} {'GMACs':>7} {'MAC bound':>9} "
            f"{'speed-up':>8} {'of bound':>8}"
        )
        for name, r in by_name.items():
            print(
                f"{name:24} {r.params:11,} {r.size_ratio:6.2f}x {r.macs / 1e9:7.2f} "
                f"{r.mac_bound:8.2f}x {r.speedup:7.2f}x {r.bound_fraction:8.0%}"
            )
        print(f"worst validation max abs diff (ONNX Runtime vs PyTorch): {worst:.1e}")
        for line in missed:
            print(f"MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
