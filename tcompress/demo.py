"""The embedded default job behind ``tcompress demo``: a small seeded hourglass, converted with
Tucker and MPS, saved, reloaded and checked against the original in both forward forms."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from tcompress.checkpoint import save_torch
from tcompress.conversion import convert
from tcompress.models import StackedHourglass, random_hourglass
from tcompress.serialize import load, save

DEMO_CONFIG = dict(n_stacks=2, depth=3, block_depth=2, features=64, n_joints=16)
DEMO_RUNS = (
    ("tucker", "full"),
    ("tucker", "2,3,3,2,32,32,3,3"),
    ("mps", "full"),
    ("mps", "2,6,18,36,32,9,3"),
)


@dataclass
class DemoRun:
    method: str
    ranks_spec: str
    summary: dict
    output_error: dict[str, float]  # forward form -> max |T-Net - original| / max |original|


def demo_model(seed: int = 0) -> StackedHourglass:
    """The demo hourglass: seeded weights and non-trivial BatchNorm statistics, eval mode."""
    return random_hourglass(seed, **DEMO_CONFIG)


def run_demo(out_dir: str, seed: int = 0, input_size: int = 128) -> list[DemoRun]:
    """Convert the demo hourglass with each of :data:`DEMO_RUNS`; files go to ``out_dir``."""
    model = demo_model(seed)
    checkpoint = os.path.join(out_dir, "demo-hourglass.pth")
    save_torch(model.state_dict(), checkpoint)
    x = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reference = model(x)
    runs = []
    for method, spec in DEMO_RUNS:
        tnet = convert(checkpoint, method=method, ranks=spec)
        tag = "full" if spec == "full" else "reduced"
        path = os.path.join(out_dir, f"demo-{method}-{tag}.pt")
        save(tnet, path)
        errors = {}
        for form in ("reconstructed", "factorized"):
            loaded = load(path, forward=form).eval()
            with torch.no_grad():
                outputs = loaded(x)
            errors[form] = max(
                float((o - r).abs().max() / r.abs().max()) for o, r in zip(outputs, reference)
            )
        runs.append(DemoRun(method, spec, dict(tnet.meta["summary"], output=path), errors))
    return runs


def run_deployment(
    out_dir: str, runs: list[DemoRun], input_size: int = 128, repeats: int = 10
) -> list:
    """Export the original network and the reduced-rank T-Nets to ONNX (validated), then measure
    them in ONNX Runtime, each as a ratio to the original's export.

    Returns the :class:`~tcompress.export.bench.BenchResult` of each file, the original first.
    """
    from tcompress.export.bench import bench_onnx
    from tcompress.export.onnx import export_onnx

    checkpoint = os.path.join(out_dir, "demo-hourglass.pth")
    files = [(checkpoint, "dense", os.path.join(out_dir, "demo-hourglass.onnx"))]
    for run in runs:
        if run.ranks_spec == "full":
            continue
        forms = ("dense", "factorized") if run.method == "tucker" else ("factorized",)
        for form in forms:
            target = os.path.join(out_dir, f"demo-{run.method}-reduced-{form}.onnx")
            files.append((run.summary["output"], form, target))
    for source, form, target in files:
        export_onnx(source, target, form, input_size=input_size)
    return bench_onnx([t for _, _, t in files], input_size=input_size, repeats=repeats)
