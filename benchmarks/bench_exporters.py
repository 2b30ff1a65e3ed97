"""PyTorch's two ONNX exporters on the graphs tcompress writes: TorchScript tracing against dynamo.

``tcompress.export_onnx`` traces with the TorchScript-based exporter (``dynamo=False``). This
measures both on the models it exports, from the same plain-convolution module
(``tcompress.export.onnx.deployable``: passes applied, BatchNorms folded): the paper-configuration
original (dense), its Tucker T-Net 4,4,3,2,64,64,3,3 and its MPS T-Net at ``ratio=3`` (factorized),
each with a dynamic batch axis. For each file: export time, whether it validates against PyTorch
at the float32 tolerances (max difference relative to the largest output), nodes and
initializers (do the shared factors stay one initializer each?), float parameters, file size,
and ONNX Runtime latency in one interleaved ``tcompress bench`` run, as ratios of the TorchScript
file to the dynamo one.

The dynamo exporter needs ``onnxscript`` (``pip install onnxscript``), which tcompress does not
depend on.

Usage::

    python benchmarks/bench_exporters.py [--input-size 256] [--repeats 20] [--threads 2]
        [--record docs/records/exporters.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

try:
    import tcompress
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tcompress

from tcompress.export.bench import bench_onnx  # noqa: E402
from tcompress.export.onnx import DEFAULT_OPSET, deployable  # noqa: E402
from tcompress.export.validate import output_names, validate_onnx  # noqa: E402
from tcompress.models import random_hourglass  # noqa: E402

MODELS = {
    "original (dense)": (None, None, "dense"),
    "tucker 4,4,3,2,64,64,3,3 (factorized)": ("tucker", "4,4,3,2,64,64,3,3", "factorized"),
    "mps ratio 3 (factorized)": ("mps", None, "factorized"),
}
#: The dynamo exporter writes opset 18 and up; asked for 17 it converts down afterwards.
DYNAMO_OPSET = 18


def export(module, path: str, size: int, names: list[str], dynamo: bool) -> float:
    example = torch.zeros(1, 3, size, size)
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                opset_version=DYNAMO_OPSET,
                input_names=["image"],
                output_names=names,
                dynamic_shapes=({0: batch},),
                optimize=True,
            )
            program.save(path)
        else:
            torch.onnx.export(
                module,
                (example,),
                path,
                dynamo=False,
                opset_version=DEFAULT_OPSET,
                input_names=["image"],
                output_names=names,
                dynamic_axes={name: {0: "batch"} for name in ["image", *names]},
                do_constant_folding=True,
            )
    return time.perf_counter() - start


def facts(path: str) -> dict:
    model = onnx.load(path)
    uses = Counter(n.input[1] for n in model.graph.node if n.op_type == "Conv")
    return dict(
        nodes=len(model.graph.node),
        node_types=dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
        initializers=len(model.graph.initializer),
        float_params=sum(
            int(np.prod(i.dims))
            for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.FLOAT
        ),
        shared_conv_weights=sum(1 for n in uses.values() if n > 1),
        file_bytes=os.path.getsize(path),
        opset=next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", default="docs/records/exporters.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime
    import onnxscript

    original = random_hourglass(0)
    work = tempfile.mkdtemp(prefix="tcompress-exporters-")
    rows, paths = [], []
    for name, (method, ranks, form) in MODELS.items():
        if method is None:
            model = original
        elif ranks is None:
            model = tcompress.convert(original, method=method, ratio=3)
        else:
            model = tcompress.convert(original, method=method, ranks=ranks)
        module = deployable(model.eval(), form)
        names = output_names(model, torch.zeros(1, 3, 64, 64))
        for dynamo in (False, True):
            exporter = "dynamo" if dynamo else "torchscript"
            path = os.path.join(work, f"{len(rows)}-{exporter}.onnx")
            row = dict(model=name, exporter=exporter)
            try:
                row["export_seconds"] = export(module, path, args.input_size, names, dynamo)
            except Exception as e:  # record what failed, measure the rest
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                rows.append(row)
                print(f"{name}, {exporter}: failed: {row['error']}", flush=True)
                continue
            validation = validate_onnx(
                path,
                model,
                input_size=(args.input_size, args.input_size),
                output_names=names,
            )
            row.update(facts(path))
            row["validates"] = validation.ok
            row["max_rel_diff"] = max(c.max_rel_diff for c in validation.outputs)
            rows.append(row)
            paths.append((len(rows) - 1, path))
            print(f"{name}, {exporter}: {row['export_seconds']:.1f} s", flush=True)
    measured = bench_onnx(
        [p for _, p in paths],
        input_size=args.input_size,
        threads=args.threads,
        repeats=args.repeats,
    )
    for (i, _), result in zip(paths, measured):
        rows[i]["speedup_vs_first"] = result.speedup
        rows[i]["median_ms"] = result.median_ms
    summary = {}
    for name in MODELS:
        pair = {r["exporter"]: r for r in rows if r["model"] == name and "error" not in r}
        if len(pair) == 2:
            ts, dy = pair["torchscript"], pair["dynamo"]
            summary[name] = dict(
                dynamo_speed_vs_torchscript=ts["median_ms"] / dy["median_ms"],
                dynamo_size_vs_torchscript=dy["file_bytes"] / ts["file_bytes"],
                dynamo_export_time_vs_torchscript=dy["export_seconds"] / ts["export_seconds"],
                both_validate=ts["validates"] and dy["validates"],
                same_shared_weights=ts["shared_conv_weights"] == dy["shared_conv_weights"],
            )
    record = dict(
        settings=dict(
            vars(args),
            torch=torch.__version__,
            onnxscript=onnxscript.__version__,
            onnxruntime=onnxruntime.__version__,
            machine=platform.machine(),
            torchscript_opset=DEFAULT_OPSET,
            dynamo_opset=DYNAMO_OPSET,
        ),
        rows=rows,
        summary=summary,
    )
    with open(args.record + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    os.replace(args.record + ".tmp", args.record)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
