"""INT8 choices measured: activation type, calibration method and count, nodes left in float.

Every INT8 file is made by :func:`tcompress.export.quantize.quantize_int8` (ONNX Runtime's
pre-processing, QDQ, int8 weights) from a float32 file written by ``tcompress.export_onnx``.

**Speed** on the paper configuration (``StackedHourglass()``: 4 stacks, depth 4, f = 128; random
weights, which do not change the time): the original exported ``dense`` and the Tucker T-Net
4,4,3,2,64,64,3,3 exported ``factorized``, each in float32 and quantized every way of
``SPEED_VARIANTS`` (calibrated on 8 synthetic training images: the count does not change the
graph), timed by :func:`tcompress.export.bench.bench_onnx` in one interleaved run (ONNX Runtime
CPU provider, ``--threads`` intra-op threads, batch 1, 256x256, median of ``--rounds``), as
ratios to the float32 original; also each INT8 T-Net against the original quantized the same
way, and file sizes against the float32 original.

**Accuracy** on the bundled model (a 2-stack hourglass trained on synthetic data) and its Tucker
T-Net 2,2,3,2,32,32,2,2 (3x; ``tcompress convert``, no fine-tuning), and with
``--finetune-steps`` also that T-Net fine-tuned as ``docs/records/finetune.json``'s 3x run:
PCKh@0.5 of the float32 file and of every INT8 file of ``ACCURACY_VARIANTS`` on
``--val-samples`` held-out synthetic images (the same images for all, scored as ``tcompress
evaluate`` scores them), calibrated on ``--calibration`` synthetic training images, and on each of
``--counts`` for the default settings; with the wall time of each quantization (calibration
included).

    python benchmarks/bench_int8.py --record docs/records/int8_choices.json

The defaults of ``tcompress.export.quantize`` and the reasons for them are in that module's
docstring; the record holds every figure they rest on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

try:
    import tcompress
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tcompress

import torch  # noqa: E402

from tcompress.export import quantize as q  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import FIVE_MINUTE  # noqa: E402

PAPER_RANKS = (4, 4, 3, 2, 64, 64, 3, 3)
BUNDLED_RANKS = "2,2,3,2,32,32,2,2"
#: Node groups of a tcompress hourglass export: ``first`` (the 7x7 stem convolution) and
#: ``outputs`` (the score convolutions) are :data:`~tcompress.export.quantize.EXCLUDE_GROUPS`;
#: the heads are matched by name.
HEADS_AND_SCORES = ["/heads.*", "/scores.*"]
SPEED_VARIANTS = {
    "uint8 minmax": {},
    "int8 minmax": {"activation_type": "int8"},
    "uint8 entropy": {"calibration_method": "entropy"},
    "uint8 percentile": {"calibration_method": "percentile"},
    "uint8 minmax, first conv float": {"exclude": ["first"]},
    "uint8 minmax, score convs float": {"exclude": ["outputs"]},
    "uint8 minmax, first + score convs float": {"exclude": ["first", "outputs"]},
    "uint8 minmax, heads + scores float": {"exclude": HEADS_AND_SCORES},
    "uint8 minmax, per-tensor weights": {"per_channel": False},
    "uint8 minmax, reduce_range": {"reduce_range": True},
}
ACCURACY_VARIANTS = {
    "uint8 minmax": {},
    "uint8 entropy": {"calibration_method": "entropy"},
    "uint8 percentile": {"calibration_method": "percentile"},
    "int8 minmax": {"activation_type": "int8"},
    "int8 entropy": {"activation_type": "int8", "calibration_method": "entropy"},
    "int8 percentile": {"activation_type": "int8", "calibration_method": "percentile"},
    "uint8 minmax, first conv float": {"exclude": ["first"]},
    "uint8 minmax, score convs float": {"exclude": ["outputs"]},
    "uint8 minmax, first + score convs float": {"exclude": ["first", "outputs"]},
    "uint8 minmax, heads + scores float": {"exclude": HEADS_AND_SCORES},
    "uint8 minmax, per-tensor weights": {"per_channel": False},
    "uint8 minmax, reduce_range": {"reduce_range": True},
}
#: The issue's acceptance target, for the default settings.
TARGET = {"speedup_vs_fp32_original": 3.5, "speedup_vs_int8_original": 1.25, "size": 0.1}
TARGET_PCKH_DROP = 1.0


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def quantize(source: str, out: str, images, settings: dict) -> tuple[q.QuantizationReport, float]:
    """One variant: 8-bit weights unless it names ``reduce_range`` (the variants, and the record,
    date from when 8-bit weights were the default; 7-bit ones are measured on their own row and
    in ``bench_int8_saturation.py``)."""
    started = time.perf_counter()
    report = q.quantize_int8(source, out, images, **{"reduce_range": False, **settings})
    return report, time.perf_counter() - started


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if "vnni" in f or f.startswith("amx") or f == "avx512f")


def speed(args, work: str) -> dict:
    from tcompress.export.bench import bench_onnx
    from tcompress.models import StackedHourglass

    torch.manual_seed(0)
    hg = StackedHourglass().eval()
    files = {"original": os.path.join(work, "paper-original.onnx")}
    files["tnet"] = os.path.join(work, "paper-tnet.onnx")
    print("exporting the paper configuration", flush=True)
    tcompress.export_onnx(hg, files["original"], form="dense")
    tnet = tcompress.convert(hg, method="tucker", ranks=PAPER_RANKS)
    tcompress.export_onnx(tnet, files["tnet"], form="factorized")
    images = q.calibration_images("synthetic", 8, 256, files["original"])
    rows = {}
    variants = {name: SPEED_VARIANTS[name] for name in args.speed_variants}
    for model in ("original", "tnet"):
        for name, settings in variants.items():
            out = os.path.join(work, f"paper-{model}-{slug(name)}.onnx")
            report, seconds = quantize(files[model], out, images, settings)
            rows[model, name] = {"path": out, "quantize_seconds": seconds, "report": report}
            print(f"  {model} {name}: quantized in {seconds:.0f} s", flush=True)
    paths = [files["original"], files["tnet"], *(row["path"] for row in rows.values())]
    print(f"timing {len(paths)} files, {args.rounds} rounds", flush=True)
    load_before = os.getloadavg()[0]
    timed = bench_onnx(paths, 256, threads=args.threads, repeats=args.rounds, warmup=3)
    load = {"before": load_before, "after": os.getloadavg()[0], "cores": os.cpu_count()}
    by_path = {r.path: r for r in timed}
    reference = by_path[files["original"]]
    record = {
        "fp32": {
            model: {
                "speedup_vs_fp32_original": by_path[path].speedup,
                "size_vs_fp32_original": by_path[path].size_bytes / reference.size_bytes,
                "file_bytes": by_path[path].size_bytes,
                "median_ms": by_path[path].median_ms,
            }
            for model, path in files.items()
        },
        "int8": {},
        "load_average": load,
    }
    for (model, name), row in rows.items():
        result = by_path[row["path"]]
        report = row["report"]
        entry = {
            "speedup_vs_fp32_original": result.speedup,
            "speedup_vs_fp32_same_model": by_path[files[model]].median_ms / result.median_ms,
            "size_vs_fp32_original": result.size_bytes / reference.size_bytes,
            "file_bytes": result.size_bytes,
            "median_ms": result.median_ms,
            "quantize_seconds": row["quantize_seconds"],
            "float_nodes": report.float_nodes,
            "quantized_nodes": report.quantized_nodes,
            "output_error": report.output_error,
        }
        if model == "tnet":
            entry["speedup_vs_int8_original_same_settings"] = (
                by_path[rows["original", name]["path"]].median_ms / result.median_ms
            )
        record["int8"].setdefault(model, {})[name] = entry
    return record


def pckh_table(args, work: str) -> dict:
    from tcompress.data import make_dataset
    from tcompress.data.factory import Materialized
    from tcompress.evaluation.run import OnnxModel, pckh_of
    from tcompress.models import pretrained, pretrained_path

    print("exporting the bundled model", flush=True)
    subjects = {"original": os.path.join(work, "bundled-original.onnx")}
    tcompress.export_onnx(pretrained(), subjects["original"], form="dense")
    converted = os.path.join(work, "bundled-tnet-3x.pt")
    tnet = tcompress.convert(str(pretrained_path()), method="tucker", ranks=BUNDLED_RANKS)
    tcompress.save(tnet, converted)
    subjects["tnet-3x"] = os.path.join(work, "bundled-tnet-3x.onnx")
    tcompress.export_onnx(tnet, subjects["tnet-3x"], form="factorized")
    if args.finetune_steps:
        tuned = finetune(converted, args)
        subjects["tnet-3x-finetuned"] = os.path.join(work, "bundled-tnet-3x-finetuned.onnx")
        tcompress.export_onnx(tuned, subjects["tnet-3x-finetuned"], form="factorized")

    val = Materialized(make_dataset("synthetic", "val", 256, 64, n=args.val_samples))

    def score(path: str) -> float:
        return pckh_of(OnnxModel(path, threads=args.threads), val).result().mean

    counts = sorted({*args.counts, args.calibration})
    pool = q.calibration_images("synthetic", max(counts), 256, subjects["original"])
    record = {}
    for subject, fp32 in subjects.items():
        base = score(fp32)
        entry = {"fp32_pckh": base, "int8": {}, "calibration_count": {}}
        if subject == "tnet-3x":  # the same figure as the command line gives
            entry["fp32_pckh_tcompress_evaluate"] = tcompress.evaluate(
                fp32, "synthetic", n=args.val_samples
            ).result.mean
        print(f"{subject}: fp32 PCKh {base:.2f}", flush=True)
        for name, settings in ACCURACY_VARIANTS.items():
            out = os.path.join(work, f"bundled-{subject}-{slug(name)}.onnx")
            report, seconds = quantize(fp32, out, pool[: args.calibration], settings)
            pckh = score(out)
            entry["int8"][name] = {
                "pckh": pckh,
                "drop": base - pckh,
                "quantize_seconds": seconds,
                "output_error": report.output_error,
                "size_vs_fp32": report.size_ratio,
            }
            print(
                f"  {name}: PCKh {pckh:.2f} ({base - pckh:+.2f} drop), {seconds:.1f} s", flush=True
            )
        for count in counts:
            if count == args.calibration:
                entry["calibration_count"][str(count)] = {
                    k: entry["int8"]["uint8 minmax"][k]
                    for k in ("pckh", "drop", "quantize_seconds")
                }
                continue
            out = os.path.join(work, f"bundled-{subject}-minmax-{count}.onnx")
            _, seconds = quantize(fp32, out, pool[:count], {})
            pckh = score(out)
            entry["calibration_count"][str(count)] = {
                "pckh": pckh,
                "drop": base - pckh,
                "quantize_seconds": seconds,
            }
            print(f"  uint8 minmax, {count} images: PCKh {pckh:.2f}", flush=True)
        record[subject] = entry
    record["bundled_speed"] = bundled_speed(args, subjects, work)
    return record


def bundled_speed(args, subjects: dict, work: str) -> dict:
    """The bundled files in float32 and INT8 (default settings), timed alike."""
    from tcompress.export.bench import bench_onnx

    paths, names = [], []
    for subject, fp32 in subjects.items():
        paths += [fp32, os.path.join(work, f"bundled-{subject}-{slug('uint8 minmax')}.onnx")]
        names += [f"{subject} fp32", f"{subject} int8"]
    timed = bench_onnx(paths, 256, threads=args.threads, repeats=args.rounds, warmup=3)
    return {
        name: {"speedup_vs_fp32_original": r.speedup, "size_vs_fp32_original": r.size_ratio**-1}
        for name, r in zip(names, timed)
    }


def finetune(converted: str, args) -> str:
    """The 3x T-Net fine-tuned as docs/records/finetune.json's tnet-3x run (``tcompress finetune
    --steps 860 --lr 1.5e-3 --schedule cosine --precision bf16 --train-samples 3000 --cache
    --recalibrate 512``), through the library call the command runs."""
    if args.finetuned:
        return args.finetuned
    out = converted.replace(".pt", "-finetuned.pt")
    print(f"fine-tuning the 3x T-Net for {args.finetune_steps} steps", flush=True)
    tcompress.finetune(
        converted,
        "synthetic",
        steps=args.finetune_steps,
        **FIVE_MINUTE,
        output=out,
        force=True,
    )
    return out


def findings(speed_record: dict, accuracy: dict) -> dict:
    """The figures the defaults rest on, and the issue's acceptance target for the defaults."""
    default = "uint8 minmax"
    tnet = speed_record["int8"]["tnet"][default]
    out = {
        "defaults": {
            "activation_type": q.DEFAULT_ACTIVATION,
            "calibration_method": q.DEFAULT_CALIBRATION,
            "per_channel": True,
            "exclude": [],
            "calibration_images": q.DEFAULT_IMAGES,
        },
        "acceptance": {
            "int8_tnet_vs_fp32_original": tnet["speedup_vs_fp32_original"],
            "int8_tnet_vs_int8_original": tnet["speedup_vs_int8_original_same_settings"],
            "int8_tnet_size_vs_fp32_original": tnet["size_vs_fp32_original"],
            "pckh_drop": {
                s: accuracy[s]["int8"][default]["drop"] for s in accuracy if s != "bundled_speed"
            },
        },
    }
    a = out["acceptance"]
    a["passed"] = bool(
        a["int8_tnet_vs_fp32_original"] >= TARGET["speedup_vs_fp32_original"]
        and a["int8_tnet_vs_int8_original"] >= TARGET["speedup_vs_int8_original"]
        and a["int8_tnet_size_vs_fp32_original"] <= TARGET["size"]
        and all(abs(d) <= TARGET_PCKH_DROP for k, d in a["pckh_drop"].items() if "tnet" in k)
    )
    subjects = [s for s in accuracy if s != "bundled_speed"]
    out["mean_abs_drop_by_variant"] = {
        name: statistics.mean(abs(accuracy[s]["int8"][name]["drop"]) for s in subjects)
        for name in ACCURACY_VARIANTS
    }
    out["mean_quantize_seconds_by_variant"] = {
        name: statistics.mean(accuracy[s]["int8"][name]["quantize_seconds"] for s in subjects)
        for name in ACCURACY_VARIANTS
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--counts", default="8,32,128", help="calibration counts, comma-separated")
    parser.add_argument("--finetune-steps", type=int, default=860, help="0: no fine-tuned T-Net")
    parser.add_argument("--finetuned", default=None, help="a fine-tuned 3x T-Net file to use")
    parser.add_argument("--work", default="runs/int8", help="where the ONNX files are written")
    parser.add_argument("--record", default=None, help="write the record here (JSON)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--speed-variants",
        default=";".join(SPEED_VARIANTS),
        help="the SPEED_VARIANTS to time, by name, separated by ';' (default: all)",
    )
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the sections of an existing --record that this run skips",
    )
    args = parser.parse_args()
    args.counts = [int(c) for c in args.counts.split(",") if c]
    args.speed_variants = [v.strip() for v in args.speed_variants.split(";") if v.strip()]
    unknown = [v for v in args.speed_variants if v not in SPEED_VARIANTS]
    if unknown:
        parser.error(f"unknown speed variants {unknown}; expected some of {list(SPEED_VARIANTS)}")
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)

    import onnxruntime

    started = time.perf_counter()
    record = {
        "settings": {
            **{k: v for k, v in vars(args).items() if k not in ("record", "work")},
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(),
            "cpu_flags": cpu_flags(),
            "batch": 1,
            "input_size": 256,
            "paper_tnet_ranks": list(PAPER_RANKS),
            "bundled_tnet_ranks": BUNDLED_RANKS,
        }
    }
    if args.update and args.record and os.path.exists(args.record):
        with open(args.record) as f:
            kept = json.load(f)
        for section in ("speed_paper_configuration", "accuracy_bundled"):
            if section in kept:
                record[section] = kept[section]
        record["earlier_settings"] = kept.get("settings")
    if not args.skip_speed:
        record["speed_paper_configuration"] = speed(args, args.work)
        write(args.record, record)  # kept should a later section fail
    if not args.skip_accuracy:
        record["accuracy_bundled"] = pckh_table(args, args.work)
    if "speed_paper_configuration" in record and "accuracy_bundled" in record:
        speed_record, accuracy = record["speed_paper_configuration"], record["accuracy_bundled"]
        record["findings"] = findings(speed_record, accuracy)
    record["minutes"] = (time.perf_counter() - started) / 60
    write(args.record, record)
    print(json.dumps(record.get("findings", {}), indent=1))
    return 0


def write(path: str | None, record: dict) -> None:
    if path:
        with open(path, "w") as f:
            f.write(json.dumps(record, indent=1, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
