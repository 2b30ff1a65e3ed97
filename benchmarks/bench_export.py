"""Deployment figures: every method's exports at every precision and form, measured in one run.

**Speed and size** on the paper configuration (``random_hourglass()``: 4 stacks, depth 4, f = 128,
seeded random weights and BatchNorm statistics, which do not change the time): the original, the
Tucker T-Nets 4,4,3,2,64,64,3,3 (3.0x) and 4,4,3,2,32,32,3,3 (6.1x), and every other method at
``--ratio 3`` but the CP T-Net (at 3x its rank would be about 17,000: an ALS of that rank on the
14-million-entry tensor ran for minutes without finishing, and a 1x1 convolution of that width is no
deployment). Each model is exported with ``tcompress.export_onnx`` (validated against PyTorch) in
both forms (a dense network has one) at fp32 and INT8 (calibrated on 8 synthetic images: the count
does not change the graph) and in the factorized form at fp16; the Tucker 3x T-Net also in ONNX
Runtime's mobile format. All files are timed by ``tcompress bench``'s library function in one
interleaved run (ONNX Runtime CPU provider, ``--threads`` intra-op threads, batch 1, 256x256, median
of ``--repeats`` rounds), as ratios to the float32 original. fp16 files run on the CPU provider
through the casts ONNX Runtime inserts where it has no float16 kernel: their time says nothing about
a GPU, and is recorded only as that.

**Accuracy** on the bundled model (a 2-stack hourglass trained on synthetic data): every method
at 3x (Tucker at the hand choice 2,2,3,2,32,32,2,2, the others ``--ratio 3``), fine-tuned alike
(``--finetune-steps`` steps of the 5-minute recipe, docs/records/finetune.json: RMSprop, lr
1.5e-3 cosine, bf16, 3,000 cached training images, BatchNorm re-estimated on 512), then exported
at every precision and form; PCKh@0.5 of the PyTorch model and of every file on
``--val-samples`` held-out synthetic images (the same images for all), and every file timed as
above against the bundled original's float32 export.

The record (``--record``, default docs/records/deployment.json) holds every figure, the fastest
form of each method at each precision, and the settings; ``--markdown`` prints the README's
tables from a record without measuring anything.

Usage::

    python benchmarks/bench_export.py [--repeats 20] [--threads 2] [--finetune-steps 300]
        [--val-samples 500] [--skip-accuracy] [--record docs/records/deployment.json]
    python benchmarks/bench_export.py --markdown docs/records/deployment.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

try:
    import tcompress
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tcompress

from tcompress.export.bench import bench_onnx  # noqa: E402
from tcompress.export.onnx import export_onnx  # noqa: E402
from tcompress.models import pretrained_path, random_hourglass  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import FIVE_MINUTE  # noqa: E402

#: Paper-configuration models: name -> (method, ranks or None for ``ratio=3``).
PAPER = {
    "original": (None, None),
    "tucker 3x": ("tucker", "4,4,3,2,64,64,3,3"),
    "tucker 6x": ("tucker", "4,4,3,2,32,32,3,3"),
    "mps 3x": ("mps", None),
    "tr 3x": ("tr", None),
    "layerwise-tucker 3x": ("layerwise-tucker", None),
    "layerwise-cp 3x": ("layerwise-cp", None),
    "tai 3x": ("tai", None),
}
#: Bundled-model models at 3x: name -> (method, ranks or None for ``ratio=3``).
BUNDLED = {
    "original": (None, None),
    "tucker": ("tucker", "2,2,3,2,32,32,2,2"),
    "mps": ("mps", None),
    "cp": ("cp", None),
    "tr": ("tr", None),
    "layerwise-tucker": ("layerwise-tucker", None),
    "layerwise-cp": ("layerwise-cp", None),
    "tai": ("tai", None),
}
#: (precision, form) of every export; fp16 only factorized (and dense for a dense network).
VARIANTS = (
    ("fp32", "dense"),
    ("fp32", "factorized"),
    ("int8", "dense"),
    ("int8", "factorized"),
    ("fp16", "factorized"),
)


def variants(method: str | None):
    """(precision, form) of every export of one model; a dense network has only its dense form."""
    if method is None:
        return [(precision, "dense") for precision in ("fp32", "int8", "fp16")]
    return list(VARIANTS)


def convert(source, method: str | None, ranks: str | None):
    if method is None:
        return source if isinstance(source, torch.nn.Module) else tcompress.load(source)
    if ranks is None:
        return tcompress.convert(source, method=method, ratio=3)
    return tcompress.convert(source, method=method, ranks=ranks)


def row(model, method, precision, form, file_format, path, **measured) -> dict:
    """One exported file of the record: what it is, and what was measured of it."""
    return dict(
        model=model,
        method=method,
        precision=precision,
        form=form,
        format=file_format,
        path=path,
        **measured,
    )


def export_all(
    name: str, model, method: str | None, work: str, args, calibration: int, ort: bool = False
) -> list[dict]:
    """Every variant of one model, exported and validated; one row per file."""
    rows = []
    for precision, form in variants(method):
        stem = f"{name.replace(' ', '-')}-{form}-{precision}"
        path = os.path.join(work, stem + ".onnx")
        start = time.perf_counter()
        if args.reuse and (precision == "int8" or os.path.exists(path)):
            rows.append(reused(name, method, precision, form, path, args, calibration))
            print(f"  {stem}: reused ({time.perf_counter() - start:.0f} s)", flush=True)
            continue
        report = export_onnx(
            model,
            path,
            form,
            input_size=args.input_size,
            precision=precision,
            calibrate="synthetic" if precision == "int8" else None,
            calibration_samples=calibration if precision == "int8" else None,
        )
        rows.append(
            row(
                name,
                method or "original",
                precision,
                form,
                "onnx",
                path,
                params=report.params,
                file_bytes=report.file_bytes,
                validation=report.validation.to_dict() if report.validation else None,
                export_seconds=time.perf_counter() - start,
            )
        )
        print(f"  {stem}: {rows[-1]['export_seconds']:.0f} s", flush=True)
    if ort and args.reuse:
        from tcompress.export.mobile import to_ort

        for precision in ("fp32", "int8"):
            stem = os.path.join(work, f"{name.replace(' ', '-')}-factorized-{precision}")
            to_ort(stem + ".onnx", stem + ".ort")
            rows.append(
                row(
                    name,
                    method,
                    precision,
                    "factorized",
                    "ort",
                    stem + ".ort",
                    params=_file_params(stem.replace("-int8", "-fp32") + ".onnx"),
                    file_bytes=os.path.getsize(stem + ".ort"),
                    validation=None,
                    made="converted from the ONNX file beside it",
                )
            )
    elif ort:
        for precision in ("fp32", "int8"):
            path = os.path.join(work, f"{name.replace(' ', '-')}-factorized-{precision}.ort")
            report = export_onnx(
                model,
                path,
                "factorized",
                input_size=args.input_size,
                precision=precision,
                format="ort",
                calibrate="synthetic" if precision == "int8" else None,
                calibration_samples=calibration if precision == "int8" else None,
            )
            rows.append(
                row(
                    name,
                    method,
                    precision,
                    "factorized",
                    "ort",
                    path,
                    params=report.params,
                    file_bytes=report.file_bytes,
                    validation=None,
                )
            )
    return rows


def reused(name, method, precision, form, path, args, calibration) -> dict:
    """A row for a float32 or fp16 file an earlier run of this script wrote with the same export
    code (``--reuse``); an INT8 file is made again from the float32 one beside it, with the
    current quantization defaults."""
    from tcompress.export import quantize as q

    made, counted = "exported by an earlier run (same export code)", path
    if precision == "int8":
        source = path.replace("-int8.onnx", "-fp32.onnx")
        images = q.calibration_images("synthetic", calibration, args.input_size, source)
        q.quantize_int8(source, path, images)
        made, counted = "quantized from the float32 file beside it, this run", source
    return row(
        name,
        method or "original",
        precision,
        form,
        "onnx",
        path,
        params=_file_params(counted),  # an INT8 file: its float32 source's parameters
        file_bytes=os.path.getsize(path),
        validation=None,
        made=made,
    )


def _file_params(path: str) -> int:
    """Entries of a float32 or fp16 file's weights, each initializer once."""
    import numpy as np
    import onnx

    model = onnx.load(path)
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    return sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type in floats)


def time_rows(rows: list[dict], args) -> None:
    """Time every file in one interleaved run; ratios to the first (the float32 original)."""
    results = bench_onnx(
        [r["path"] for r in rows],
        input_size=args.input_size,
        threads=args.threads,
        repeats=args.repeats,
    )
    for row, result in zip(rows, results):
        measured = result.to_dict()
        for key in ("size_ratio", "macs", "mac_bound", "speedup", "bound_fraction", "median_ms"):
            row[key] = measured.get(key)
        for key in ("int8_fraction", "provider"):
            if key in measured:
                row[key] = measured[key]


def fastest(rows: list[dict]) -> dict:
    """Per model and precision (ONNX files), the form with the largest speed-up."""
    best: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row["format"] != "onnx" or row.get("speedup") is None:
            continue
        by_precision = best.setdefault(row["model"], {})
        held = by_precision.get(row["precision"])
        if held is None or row["speedup"] > held["speedup"]:
            by_precision[row["precision"]] = {
                "form": row["form"],
                "speedup": row["speedup"],
                "size_ratio": row["size_ratio"],
                **({"pckh": row["pckh"]} if "pckh" in row else {}),
            }
    return best


def paper_speed(args, work: str) -> dict:
    torch.manual_seed(0)
    model = random_hourglass(0)
    rows, ranks = [], {}
    for name, (method, given) in PAPER.items():
        if args.only and method not in (None, *args.only):
            continue
        start = time.perf_counter()
        converted = convert(model, method, given)
        seconds = time.perf_counter() - start
        if method is not None:
            ranks[name] = dict(
                ranks=_ranks(converted),
                ratio=_ratio(model, converted),
                convert_seconds=seconds,
            )
        print(f"paper configuration, {name}: converted in {seconds:.0f} s", flush=True)
        rows += export_all(name, converted, method, work, args, 8, ort=name == "tucker 3x")
    print("timing", flush=True)
    time_rows(rows, args)
    return dict(models=ranks, rows=rows, fastest=fastest(rows))


def bundled_accuracy(args, work: str) -> dict:
    """Every method at 3x on the bundled model, fine-tuned alike, at every precision and form."""
    from tcompress.evaluation.run import OnnxModel, evaluate

    bundled = str(pretrained_path())
    rows, models = [], {}
    original_pckh = evaluate(bundled, "synthetic", n=args.val_samples).result.mean
    for name, (method, given) in BUNDLED.items():
        if args.only and method not in (None, *args.only):
            continue
        if method is None:
            model, pckh = tcompress.load(bundled), original_pckh
            models[name] = dict(pckh_pytorch=pckh, params=_params(model))
        else:
            converted = convert(bundled, method, given)
            path = os.path.join(work, f"bundled-{method}.pt")
            if os.path.exists(path):
                os.remove(path)
            tcompress.save(converted, path)
            tuned = args.finetuned.get(method) or path.replace(".pt", "-finetuned.pt")
            start = time.perf_counter()
            if method not in args.finetuned:
                print(f"bundled {name}: fine-tuning {args.finetune_steps} steps", flush=True)
                tcompress.finetune(
                    path,
                    "synthetic",
                    steps=args.finetune_steps,
                    **FIVE_MINUTE,
                    output=tuned,
                    force=True,
                )
            model = tcompress.load(tuned)
            pckh = evaluate(model, "synthetic", n=args.val_samples).result.mean
            models[name] = dict(
                ranks=_ranks(converted),
                ratio=_ratio(tcompress.load(bundled), converted),
                params=_params(model),
                pckh_converted=evaluate(converted, "synthetic", n=args.val_samples).result.mean,
                pckh_pytorch=pckh,
                finetune_minutes=(time.perf_counter() - start) / 60,
                finetuned=args.finetuned.get(method, f"{args.finetune_steps} steps, this run"),
            )
        for row in export_all(f"bundled {name}", model, method, work, args, args.calibration):
            row["model"] = name
            score = evaluate(OnnxModel(row["path"]), "synthetic", n=args.val_samples)
            row["pckh"] = score.result.mean
            row["pckh_drop"] = pckh - row["pckh"]
            rows.append(row)
        print(f"bundled {name}: {pckh:.1f}", flush=True)
    section = dict(original_pckh=original_pckh, models=models, rows=rows)
    if not args.no_timing:
        time_bundled(section, args)
    return section


def time_bundled(section: dict, args) -> None:
    """Time the bundled model's exports (the files the accuracy section wrote), in one run."""
    print("timing the bundled exports", flush=True)
    time_rows(section["rows"], args)
    section["fastest"] = fastest(section["rows"])


def _ranks(model) -> list | str:
    ranks = getattr(model, "ranks", None)
    if ranks is None and hasattr(model, "summary"):
        ranks = getattr(model.summary, "ranks", None)
    return list(ranks) if isinstance(ranks, (tuple, list)) else str(ranks)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _ratio(original, model) -> float:
    return _params(original) / _params(model)


def markdown(record: dict) -> str:
    """The README's table (one row per model) and the full table of ``docs/deployment.md``."""
    lines = []
    paper = record.get("paper")
    if paper:
        cell = {(r["model"], r["precision"], r["form"], r["format"]): r for r in paper["rows"]}
        lines += [
            "| model | parameters | fp32 dense | fp32 factorized | INT8 factorized "
            "| INT8 dense | fp16 factorized |",
            "|---|---|---|---|---|---|---|",
        ]
        models = paper.get("models", {})

        def label(model: str) -> str:
            """The model's method and measured ratio, and its ranks if the method is Tucker."""
            if model not in models:
                return model
            method = model.split()[0]
            ranks = models[model]["ranks"]
            given = f" {','.join(map(str, ranks))}" if method == "tucker" else ""
            return f"{method}{given} ({models[model]['ratio']:.1f}x)"

        for model in dict.fromkeys(r["model"] for r in paper["rows"]):
            dense = model == "original"
            factorized = "dense" if dense else "factorized"
            f32 = cell[model, "fp32", "dense", "onnx"]
            fac = cell[model, "fp32", factorized, "onnx"]
            i8 = cell[model, "int8", factorized, "onnx"]
            i8d = cell[model, "int8", "dense", "onnx"]
            f16 = cell[model, "fp16", factorized, "onnx"]
            factorized_cells = (
                "- | - |"
                if dense
                else (f"{_x(fac['speedup'])}, {_size(fac)} | {_x(i8['speedup'])}, {_size(i8)} |")
            )
            lines.append(
                f"| {label(model)} | {fac['params']:,} | {_x(f32['speedup'])} | {factorized_cells} "
                f"{_x(i8d['speedup'])}, {_size(i8d)} | {_size(f16)} |"
            )
        lines += [
            "",
            "| model | precision | form | format | parameters | file size | MAC bound | speed-up |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in paper["rows"]:
            # An .ort file holds its ONNX source's network: its parameters are that file's.
            params = cell[r["model"], r["precision"], r["form"], "onnx"]["params"]
            lines.append(
                f"| {label(r['model'])} | {r['precision']} | {r['form']} | {r['format']} | "
                f"{params:,} | {_size(r)} | {_x(r['mac_bound'])} | {_x(r['speedup'])} |"
            )
        lines.append("")
    bundled = record.get("bundled")
    if bundled and "fastest" in bundled:
        lines += [
            "| method (3x) | PCKh PyTorch | fp32 fastest | INT8 fastest | INT8 PCKh | fp16 PCKh |",
            "|---|---|---|---|---|---|",
        ]
        for name, best in bundled["fastest"].items():
            info = bundled["models"][name]
            fp16 = best.get("fp16", {}).get("pckh")
            lines.append(
                f"| {name} | {info['pckh_pytorch']:.1f} | "
                f"{_x(best['fp32']['speedup'])} ({best['fp32']['form']}) | "
                f"{_x(best['int8']['speedup'])} ({best['int8']['form']}) | "
                f"{best['int8']['pckh']:.1f} | {'' if fp16 is None else f'{fp16:.1f}'} |"
            )
    return "\n".join(lines)


def _size(row: dict) -> str:
    """The file's size as a fraction of the float32 original's."""
    return "-" if row.get("size_ratio") is None else f"{1 / row['size_ratio']:.3f}x size"


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--only", default=None, help="methods to run, comma-separated")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the float32 and fp16 files an earlier run left in --work instead of exporting "
        "them again; INT8 files are quantized again from them",
    )
    parser.add_argument(
        "--finetuned",
        action="append",
        default=[],
        metavar="METHOD=FILE",
        help="use this fine-tuned 3x model of the bundled one for METHOD (made with the same "
        "recipe, e.g. by bench_int8.py); repeatable",
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument(
        "--no-timing",
        action="store_true",
        help="score the bundled exports without timing them (time them later with --time-bundled)",
    )
    parser.add_argument(
        "--time-bundled",
        action="store_true",
        help="only time the bundled exports of an existing --record (files still in --work)",
    )
    parser.add_argument("--work", default="runs/deployment")
    parser.add_argument("--record", default="docs/records/deployment.json")
    parser.add_argument("--markdown", metavar="RECORD", default=None)
    args = parser.parse_args()
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return 0
    args.only = args.only.split(",") if args.only else None
    args.finetuned = dict(item.split("=", 1) for item in args.finetuned)
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    import onnxruntime

    record = dict(
        settings=dict(
            {k: v for k, v in vars(args).items() if k != "markdown"},
            onnxruntime=onnxruntime.__version__,
            torch=torch.__version__,
            machine=platform.machine(),
        )
    )
    if args.time_bundled or os.path.exists(args.record):
        with open(args.record) as f:
            kept = json.load(f)
        for section in ("paper", "bundled"):
            if section in kept:
                record[section] = kept[section]
    if args.time_bundled:
        time_bundled(record["bundled"], args)
        record["made"] = ["bundled"]
        write(args.record, record)
        print(markdown(record))
        return 0
    if not args.skip_speed:
        record["paper"] = paper_speed(args, args.work)
        record["paper"]["settings"] = dict(record["settings"])
        record.setdefault("made", []).append("paper")
        write(args.record, record)
    if not args.skip_accuracy:
        record["bundled"] = bundled_accuracy(args, args.work)
        record["bundled"]["settings"] = dict(record["settings"])
        record.setdefault("made", []).append("bundled")
        write(args.record, record)
    print(markdown(record))
    return 0


def write(path: str, record: dict) -> None:
    """Write ``record``, keeping the sections of the file on disk that this run did not make
    (the speed and accuracy sections may be run as separate processes)."""
    from tcompress.checkpoint import atomic_write

    merged = dict(record)
    if os.path.exists(path):
        with open(path) as f:
            on_disk = json.load(f)
        for section in ("paper", "bundled"):
            if section in on_disk and section not in record.get("made", ()):
                merged[section] = on_disk[section]

    def dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump({k: v for k, v in merged.items() if k != "made"}, f, indent=1)
            f.write("\n")

    atomic_write(path, dump)


if __name__ == "__main__":
    sys.exit(main())
