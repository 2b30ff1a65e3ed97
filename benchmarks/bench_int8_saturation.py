"""INT8 on an x86 CPU without VNNI: what 16-bit saturation costs, and what 7-bit weights cost.

ONNX Runtime's u8 x s8 convolutions on x86 without VNNI add each pair of products in a 16-bit
integer, which clamps; ``reduce_range=True`` quantizes the weights to 7 bits so that every pair
fits. Each subject is exported to float32, quantized by
:func:`tcompress.export.quantize.quantize_int8` with 8-bit and with 7-bit weights (defaults
otherwise, calibrated on ``--calibration`` synthetic training images), and every file is scored
(PCKh@0.5 on ``--val-samples`` held-out synthetic images, as ``tcompress evaluate`` scores them)
two ways:

- **fused**: as ONNX Runtime runs the file by default, with its integer kernels: on this CPU;
- **unfused**: with ONNX Runtime's graph optimisations off, so that the QDQ graph runs as
  QuantizeLinear, DequantizeLinear and float convolutions: the quantized file's arithmetic
  without any integer kernel, which is what a CPU that does not saturate (VNNI, ARM) computes,
  up to float32 rounding.

With each subject, the record counts the 8-bit file's uint8 activations and those whose zero
point is 64 or more (signed tensors, whose codes are large more often than after a ReLU).

Subjects: the bundled model (dense export), its 3x Tucker T-Net 2,2,3,2,32,32,2,2 as converted
(factorized export), and with ``--finetuned`` a fine-tuned T-Net file (factorized export).

    python benchmarks/bench_int8_saturation.py --finetuned tnet-ft.pt \\
        --record docs/records/int8_saturation.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

try:
    import tcompress
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tcompress

import torch  # noqa: E402

from tcompress.export.quantize import (  # noqa: E402
    calibration_images,
    quantize_int8,
    saturating_cpu,
)

BUNDLED_RANKS = "2,2,3,2,32,32,2,2"


def scorer(data, batch_size: int):
    import onnxruntime as ort

    from tcompress.evaluation.run import OnnxModel, pckh_of

    def score(path: str, fused: bool = True) -> float:
        model = OnnxModel(path)
        if not fused:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            model.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return round(pckh_of(model, data, batch_size).result().mean, 3)

    return score


def zero_points(path: str) -> dict:
    """How many activations of a QDQ file are quantized as uint8, and how many of them have a
    zero point of 64 or more (signed tensors; after a ReLU it is 0)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    points = [
        int(inits[n.input[2]])
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
        and len(n.input) > 2
        and n.input[2] in inits
        and inits[n.input[2]].dtype == np.uint8
    ]
    return {"activations": len(points), "zero_point_64_or_more": sum(z >= 64 for z in points)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finetuned", default=None, help="a fine-tuned T-Net file to add")
    parser.add_argument("--finetuned-how", default=None, help="how that file was made (recorded)")
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--record", default=None, help="write the record here (JSON)")
    args = parser.parse_args()

    from tcompress.data import make_dataset
    from tcompress.models import pretrained_path

    data = make_dataset("synthetic", "val", 256, 64, n=args.val_samples, seed=0)
    score = scorer(data, args.batch_size)
    record = {
        "settings": {k: v for k, v in vars(args).items() if k != "record"},
        "cpu": {
            "machine": platform.machine(),
            **{
                k: v
                for k, v in torch.cpu.get_capabilities().items()
                if k in ("cpu_name", "avx2", "avx512_f", "avx512_vnni", "avx_vnni")
            },
        },
        "saturating_cpu": saturating_cpu(),
        "onnxruntime": __import__("onnxruntime").__version__,
        "subjects": {},
    }
    with tempfile.TemporaryDirectory(prefix="int8-saturation-") as work:
        converted = os.path.join(work, "tnet-3x.pt")
        tcompress.save(tcompress.convert(pretrained_path(), ranks=BUNDLED_RANKS), converted)
        subjects = {
            "original": (str(pretrained_path()), "dense"),
            "tnet-3x-converted": (converted, "factorized"),
        }
        if args.finetuned:
            subjects["tnet-3x-finetuned"] = (args.finetuned, "factorized")
        for name, (source, form) in subjects.items():
            fp32 = os.path.join(work, f"{name}.onnx")
            tcompress.export_onnx(source, fp32, form)
            images = calibration_images("synthetic", args.calibration, 256, fp32)
            entry = {"form": form, "fp32": score(fp32)}
            entry["zero_points"] = None
            for bits, reduce_range in (("8-bit", False), ("7-bit", True)):
                int8 = os.path.join(work, f"{name}-{bits}.onnx")
                report = quantize_int8(fp32, int8, images, reduce_range=reduce_range)
                entry[bits] = {
                    "fused": score(int8),
                    "unfused": score(int8, fused=False),
                    "output_error": round(report.output_error, 4),
                }
                entry["zero_points"] = entry["zero_points"] or zero_points(int8)
                for way in ("fused", "unfused"):
                    entry[bits][f"{way}_drop"] = round(entry["fp32"] - entry[bits][way], 3)
            record["subjects"][name] = entry
            print(name, json.dumps(entry), flush=True)
    if args.record:
        Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
