"""Training-step cost in float32 and in bf16, as ratios to the float32 step, same run.

One step is what ``tcompress finetune`` does: forward, heatmap loss against random targets,
backward, an RMSprop step; in ``fp32`` on the default layout, in ``fp32-channels-last`` on
channels-last activations and kernels, and in ``bf16`` (autocast) on channels-last, as
``--precision bf16`` runs it. Models: the bundled hourglass and its Tucker T-Net at ``--ranks``
(reconstructed form). Steps are interleaved across settings, and the median of ``--rounds`` is
reported as a speed-up over the same model's fp32 step.

Usage::

    python benchmarks/bench_precision.py [--batch 16] [--rounds 5] [--threads 2] [--json]
        [--record docs/records/precision.json]

``--record`` writes the settings and the speed-ups as JSON (a timing: measure on a quiet
machine).
"""

from __future__ import annotations

import argparse
import copy
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

from tcompress.models import pretrained  # noqa: E402
from tcompress.train import heatmap_loss, native_bf16  # noqa: E402

SETTINGS = {
    "fp32": (torch.preserve_format, False),
    "fp32-channels-last": (torch.channels_last, False),
    "bf16": (torch.channels_last, True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="2,2,3,2,32,32,2,2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", default=None, help="write the speed-ups as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dense = pretrained()
    nets = {"dense": dense, "tnet": tcompress.convert(dense, "tucker", args.ranks)}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 256, 256, generator=generator)
    y = torch.rand(args.batch, 16, 64, 64, generator=generator)
    runs = {}
    for name, net in nets.items():
        for setting, (layout, mixed) in SETTINGS.items():
            model = copy.deepcopy(net).to(memory_format=layout).train()
            optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-6)
            runs[name, setting] = (model, optimizer, x.contiguous(memory_format=layout), mixed)

    def step(model, optimizer, images, mixed) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mixed):
            outputs = [out.float() for out in model(images)]
        optimizer.zero_grad(set_to_none=True)
        heatmap_loss(outputs, y).backward()
        optimizer.step()
        return time.perf_counter() - start

    times = {key: [] for key in runs}
    for run in runs.values():  # warm-up
        step(*run)
    for _ in range(args.rounds):
        for key, run in runs.items():
            times[key].append(step(*run))
    median = {key: statistics.median(v) for key, v in times.items()}
    report = {name: {s: median[name, "fp32"] / median[name, s] for s in SETTINGS} for name in nets}
    report["tnet / dense"] = {s: median["tnet", s] / median["dense", s] for s in SETTINGS}
    result = {"speedup": report, "native_bf16": native_bf16("cpu")}
    if args.record:
        from tcompress.checkpoint import atomic_write

        settings = {k: v for k, v in vars(args).items() if k not in ("json", "record")}
        text = json.dumps({"settings": settings, **result}, indent=1)
        atomic_write(args.record, lambda tmp: Path(tmp).write_text(text + "\n"))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"speed-up over the fp32 step (and T-Net / dense step), batch {args.batch}, 256x256, "
        f"median of {args.rounds} interleaved rounds, {args.threads} threads, T-Net ranks "
        f"{args.ranks}; native bf16: {native_bf16('cpu')}"
    )
    for name, row in report.items():
        print(f"{name}: " + ", ".join(f"{s} {v:.2f}" for s, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
