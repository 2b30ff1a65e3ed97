"""Training-step cost of T-Nets as ratios to the uncompressed network's step, same run.

One step is forward, backward (sum of squared heatmaps as the loss) and an SGD step, on the
paper configuration at 256x256 inputs. Models: the dense hourglass, a Tucker T-Net at ranks
(4,4,3,2,64,64,3,3) in the ``reconstructed`` form, the same in the ``factorized`` form, and ranks
(4,4,3,2,32,32,3,3) in the ``factorized`` form. Steps are interleaved across models (round r runs
each model once) and the median per model is reported as a ratio to the dense step, at batch 8
and batch 1 (where rebuilding W weighs more).

Targets (exit status 1 if missed, at batch 8): reconstructed <= 1.05, factorized ranks 32 <= 0.7.

Usage::

    python benchmarks/bench_train_step.py [--batches 8,1] [--rounds 3] [--threads 2] [--json]
        [--record docs/records/train_step.json]

``--record`` writes the settings and the ratios as JSON (a timing: measure on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

try:
    import tcompress
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tcompress

from tcompress.models import random_hourglass  # noqa: E402

R64 = (4, 4, 3, 2, 64, 64, 3, 3)
R32 = (4, 4, 3, 2, 32, 32, 3, 3)


def step(model, optimizer, x) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss = sum(o.square().mean() for o in model(x))
    loss.backward()
    optimizer.step()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="8,1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", default=None, help="write the ratios as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dense = random_hourglass(0).train()
    models = {
        "dense": dense,
        "reconstructed r64": tcompress.convert(dense, "tucker", R64).train(),
        "factorized r64": tcompress.convert(dense, "tucker", R64, forward="factorized").train(),
        "factorized r32": tcompress.convert(dense, "tucker", R32, forward="factorized").train(),
    }
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-6) for k, m in models.items()}
    report = {}
    for batch in (int(b) for b in args.batches.split(",")):
        x = torch.randn(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        times = {k: [] for k in models}
        for k, m in models.items():  # warm-up
            step(m, optimizers[k], x)
        for _ in range(args.rounds):
            for k, m in models.items():
                start = time.perf_counter()
                step(m, optimizers[k], x)
                times[k].append(time.perf_counter() - start)
        median = {k: statistics.median(v) for k, v in times.items()}
        report[batch] = {k: median[k] / median["dense"] for k in models if k != "dense"}
    missed = []
    if 8 in report:
        if report[8]["reconstructed r64"] > 1.05:
            missed.append("batch 8: reconstructed step > 1.05x the dense step")
        if report[8]["factorized r32"] > 0.7:
            missed.append("batch 8: factorized r32 step > 0.7x the dense step")
    if args.record:
        from tcompress.checkpoint import atomic_write

        settings = {k: v for k, v in vars(args).items() if k not in ("json", "record")}
        text = json.dumps({"settings": settings, "ratios": report, "missed": missed}, indent=1)
        atomic_write(args.record, lambda tmp: Path(tmp).write_text(text + "\n"))
    if args.json:
        print(json.dumps({"ratios": report, "missed": missed}, indent=2))
    else:
        print(
            f"training step / dense training step, paper configuration, {args.size}x{args.size},"
            f" median of {args.rounds} interleaved rounds, {args.threads} threads"
        )
        for batch, ratios in report.items():
            print(f"batch {batch}: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
        for line in missed:
            print(f"MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
