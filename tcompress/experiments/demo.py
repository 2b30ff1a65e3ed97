"""The embedded default job behind ``tcompress demo``: the whole life of a T-Net on the bundled
pretrained hourglass.

Convert it (and check that full rank is exact), re-estimate the BatchNorm statistics, fine-tune
for a few minutes, evaluate PCKh on the held-out synthetic split after every stage, and export
the original and the fine-tuned T-Net to ONNX (the T-Net in float32 and INT8, each in both forms)
to compare their latency in ONNX Runtime, their file sizes and the INT8 file's PCKh.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from tcompress.checkpoint import check_new_files, save_torch
from tcompress.conversion import convert
from tcompress.data import Materialized
from tcompress.serialize import save

__all__ = [
    "DEMO_FILES",
    "DEMO_LR",
    "DEMO_RANKS",
    "DEMO_SAMPLES",
    "DEMO_STEPS",
    "DemoReport",
    "Stage",
    "run_demo",
]

#: Tucker ranks of the demo's T-Net on the bundled model: 3.00x fewer parameters overall, the
#: channels whole, the four depth levels in a rank-2 space and 2x2 kernel ranks. ``ratio=3``,
#: which judges ranks by the error of W, picks 2,4,3,2,31,32,2,1 instead, which rebuilds W better
#: and converts lower (README, Choosing ranks; ``docs/records/ranks.json``).
DEMO_RANKS = "2,2,3,2,32,32,2,2"
DEMO_STEPS = 400
#: Synthetic training samples rendered once for the demo's fine-tuning (4 epochs of 400 steps of
#: 16), served again mirrored at random: rendering costs about as much as a training step.
DEMO_SAMPLES = 1600
#: Peak learning rate of the demo's fine-tuning (cosine decay to zero), the 5-minute recipe's
#: (README, Fine-tuning after compression; ``docs/records/finetune.json``).
DEMO_LR = 1.5e-3
FORMS = ("tnet-factorized", "tnet-dense")
#: Training images the INT8 export's activation ranges are calibrated on (as the export's default).
DEMO_CALIBRATION = 32
#: The files the demo writes in its folder.
DEMO_FILES = (
    "hourglass.pth",
    "tnet.pt",
    "hourglass.onnx",
    *(f"tnet-{form}{suffix}.onnx" for suffix in ("", "-int8") for form in ("factorized", "dense")),
)


@dataclass
class Stage:
    """One row of the demo's table."""

    name: str
    params: int
    compression: float
    pckh: float
    onnx_speedup: float | None = None  # ONNX Runtime latency of the original / this model's
    onnx_form: str | None = None  # the export measured: the faster of the two forms
    file_ratio: float | None = None  # bytes of the original's ONNX file / this export's


@dataclass
class DemoReport:
    config: dict
    ranks: str
    image_size: int
    val_samples: int
    full_rank_error: float  # max |T-Net - original| / max |original| at full rank
    finetune_steps: int
    finetune_seconds: float
    recalibration_images: int
    precision: str
    train_samples: int
    cache_seconds: float
    stages: list[Stage] = field(default_factory=list)
    onnx: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_demo(
    out_dir: str | os.PathLike | None = None,
    *,
    model: nn.Module | None = None,
    ranks: str | None = None,
    steps: int | None = None,
    lr: float = DEMO_LR,
    batch_size: int = 16,
    image_size: int = 256,
    val_samples: int = 500,
    recalibration_images: int = 256,
    train_samples: int | None = None,
    precision: str | None = None,
    onnx_repeats: int = 10,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoReport:
    """Convert -> re-estimate BatchNorm -> fine-tune -> evaluate -> export, files in ``out_dir``
    (made if missing; None: a temporary directory, removed at the end).

    A file of :data:`DEMO_FILES` already in ``out_dir`` is refused before anything runs, and
    again as each file is written, unless ``force``.

    The fine-tuned T-Net is exported in both forms (factorized and fused dense), in float32 and
    in INT8 (calibrated on :data:`DEMO_CALIBRATION` synthetic training images), and the faster
    form of each precision in ONNX Runtime is reported; the INT8 file is also scored on the
    held-out split, as a last stage.

    Parameters
    ----------
    model
        The dense hourglass to start from; default: the bundled pretrained one.
    ranks
        Tucker ranks of the T-Net; default :data:`DEMO_RANKS`.
    steps, lr, batch_size
        Fine-tuning (default: :data:`DEMO_STEPS` steps): RMSprop with a cosine decay of ``lr``
        to zero, supervised heatmap loss on every stack, in the reconstructed form (at ranks that
        keep the channels whole it is the cheaper form to train; ``benchmarks/bench_train_step.py``
        times both).
    train_samples
        Synthetic training samples (default: :data:`DEMO_SAMPLES`), rendered once in worker
        processes and kept in memory (:class:`~tcompress.data.SampleCache`); the first
        ``recalibration_images`` of them re-estimate BatchNorm.
    precision
        ``"fp32"`` or ``"bf16"``; default: bf16 where the CPU computes it natively.
    image_size, val_samples
        Input side, and the size of the held-out synthetic split every stage is evaluated on.
    """
    from tcompress.data import SampleCache, SyntheticPose
    from tcompress.evaluation.run import OnnxModel, pckh_of
    from tcompress.export.bench import bench_onnx
    from tcompress.export.onnx import export_onnx
    from tcompress.models import pretrained
    from tcompress.train import (
        TrainSettings,
        evaluate_pck,
        fit,
        native_bf16,
        recalibrate_batchnorm,
    )

    ranks = DEMO_RANKS if ranks is None else ranks
    steps = DEMO_STEPS if steps is None else steps
    train_samples = DEMO_SAMPLES if train_samples is None else train_samples
    if out_dir is not None:
        check_new_files([os.path.join(out_dir, name) for name in DEMO_FILES], force=force)
    with contextlib.ExitStack() as cleanup:
        if out_dir is None:
            out_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tcompress-demo-"))
        out_dir = os.fspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        say = progress or (lambda message: None)
        original = pretrained() if model is None else model.eval()
        checkpoint = os.path.join(out_dir, "hourglass.pth")
        weights = {k: v.detach().cpu() for k, v in original.state_dict().items()}
        save_torch(weights, checkpoint, force=force)
        heatmap = image_size // 4
        say("Rendering the held-out synthetic split")
        val = Materialized(SyntheticPose(val_samples, image_size, heatmap, seed=seed, split="val"))
        precision = precision or ("bf16" if native_bf16("cpu") else "fp32")

        def pckh(net: nn.Module) -> float:
            return evaluate_pck(net, val, batch_size=batch_size)["mean"]

        say("Checking that conversion at full rank is exact")
        full = convert(checkpoint, method="tucker", ranks="full").eval()
        x = val[0]["image"][None]
        with torch.no_grad():
            reference, got = original(x), full(x)
        full_error = max(float((g - r).abs().max() / r.abs().max()) for g, r in zip(got, reference))

        dense_params = _params(original)
        stages = []

        def record(name: str, net: nn.Module) -> Stage:
            say(f"Evaluating: {name}")
            stage = Stage(name, _params(net), dense_params / _params(net), pckh(net))
            stages.append(stage)
            return stage

        record("original", original)
        say(f"Converting with Tucker ranks {ranks}")
        tnet = convert(checkpoint, method="tucker", ranks=ranks, forward="reconstructed")
        record("T-Net, as converted", tnet)
        say(f"Rendering {train_samples} training samples")
        started = time.perf_counter()
        workers = min(4, os.cpu_count() or 1)
        train = SampleCache(
            SyntheticPose(train_samples, image_size, heatmap, seed=seed), workers=workers, seed=seed
        )
        cache_seconds = time.perf_counter() - started
        say("Re-estimating BatchNorm statistics from unlabeled images")
        images = Subset(train, range(min(recalibration_images, len(train))))
        report = recalibrate_batchnorm(tnet, DataLoader(images, batch_size=batch_size))
        record("+ BatchNorm re-estimated", tnet)
        say(f"Fine-tuning for {steps} steps")
        settings = TrainSettings(
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            schedule="cosine",
            seed=seed,
            precision=precision,
        )
        result = fit(
            tnet,
            train,
            settings,
            on_event=lambda e: (
                e["kind"] == "step" and say(f"Fine-tuning: step {e['step']}/{steps}")
            ),
        )
        tnet.eval()
        record(f"+ fine-tuned {steps} steps", tnet)
        tnet_path = os.path.join(out_dir, "tnet.pt")
        save(tnet, tnet_path, force=force)

        say("Exporting to ONNX and measuring in ONNX Runtime")
        files = [os.path.join(out_dir, "hourglass.onnx")]
        export_onnx(checkpoint, files[0], "dense", input_size=image_size, force=force)
        for exported in ("fp32", "int8"):
            for form in ("factorized", "dense"):
                suffix = "" if exported == "fp32" else "-int8"
                files.append(os.path.join(out_dir, f"tnet-{form}{suffix}.onnx"))
                say(f"Exporting the T-Net: {form} form, {exported}")
                export_onnx(
                    tnet_path,
                    files[-1],
                    form,
                    input_size=image_size,
                    precision=exported,
                    calibrate="synthetic" if exported == "int8" else None,
                    calibration_samples=DEMO_CALIBRATION if exported == "int8" else None,
                    force=force,
                )
        measured = bench_onnx(files, input_size=image_size, repeats=onnx_repeats)
        stages[0].onnx_speedup, stages[0].onnx_form, stages[0].file_ratio = 1.0, "dense", 1.0

        def faster(first: int) -> tuple[int, str]:
            """Of the factorized (``first``) and dense (``first + 1``) files, the faster."""
            best = max((first, first + 1), key=lambda i: measured[i].speedup)
            return best, ("factorized" if best == first else "dense")

        tuned = stages[-1]
        best, tuned.onnx_form = faster(1)
        tuned.onnx_speedup, tuned.file_ratio = measured[best].speedup, measured[best].size_ratio
        best, form = faster(3)
        say("Evaluating: the INT8 file")
        score = pckh_of(OnnxModel(files[best]), val, batch_size).result().mean
        stages.append(
            Stage(
                "+ INT8 export",
                tuned.params,
                tuned.compression,
                score,
                onnx_speedup=measured[best].speedup,
                onnx_form=form,
                file_ratio=measured[best].size_ratio,
            )
        )
        return DemoReport(
            config=original.config.to_dict(),
            ranks=ranks,
            image_size=image_size,
            val_samples=val_samples,
            full_rank_error=full_error,
            finetune_steps=result.steps,
            finetune_seconds=result.seconds,
            recalibration_images=report.images,
            precision=precision,
            train_samples=train_samples,
            cache_seconds=cache_seconds,
            stages=stages,
            onnx=[r.to_dict() for r in measured],
        )
