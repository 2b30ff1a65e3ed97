"""Writing ONNX files: a T-Net or a dense hourglass, in the fused dense or the factorized form.

The model is first rewritten by the passes into plain convolutions with every BatchNorm folded,
then traced by ``torch.onnx.export``, so the graph uses standard ONNX operators only (Conv, Relu,
MaxPool, Resize, Add, Mul). Weights that several layers share are one parameter, hence one
initializer in the file. Every export is validated against the PyTorch model (see
:mod:`tcompress.export.validate`) before the file is moved into place.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from tcompress.checkpoint import atomic_write
from tcompress.errors import ExportError, param
from tcompress.export.bench import INPUT_LAYOUT_KEY, PIXEL_MEAN_KEY, PIXEL_STD_KEY
from tcompress.export.task import CHECK_SAMPLES, MAX_DROP, TaskCheck, task_check
from tcompress.export.validate import ValidationReport, output_names, validate_onnx
from tcompress.layerwise import LayerwiseNet, dense_layers, plain_layers
from tcompress.layouts import KNOWN_MODELS
from tcompress.models.io import ModelIO, model_io
from tcompress.passes import factorize, fold_batchnorm, materialize
from tcompress.tnet import TNet
from tcompress.vocabulary import (
    EXPORT_FORMS,
    EXPORT_PRECISIONS,
    FILE_FORMATS,
    FP32_ATOL,
    FP32_RTOL,
)

log = logging.getLogger(__name__)

FORMS = EXPORT_FORMS
DEFAULT_OPSET = 17
INPUT_NAME = "image"


@dataclass
class ExportReport:
    """What an export wrote and how it validated."""

    path: str
    form: str
    opset: int
    input_size: tuple[int, int]
    params: int
    file_bytes: int
    outputs: list[str]
    validation: ValidationReport | None = None
    notes: list[str] = field(default_factory=list)
    task: TaskCheck | None = None  # PCKh of the file against the PyTorch model, when checked
    precision: str = "fp32"
    format: str = "onnx"
    quantization: dict | None = None  # INT8: the settings and what stayed in float

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("validation", "task")}
        out["validation"] = self.validation.to_dict() if self.validation else None
        out["task"] = self.task.to_dict() if self.task else None
        return out


def deployable(model: nn.Module, form: str) -> nn.Module:
    """The plain-convolution model that is exported: passes applied, BatchNorms folded, eval mode.

    ``form`` is ``"dense"`` (every block kernel rebuilt: the fused dense form) or
    ``"factorized"`` (the three-convolution form; for a layer-wise network, its chains of small
    convolutions); a dense network has only the dense form.
    """
    if form not in FORMS:
        raise ExportError(f"form {form!r} is unknown; expected one of {', '.join(FORMS)}")
    _check_exportable(model)
    if isinstance(model, TNet):
        rewritten = materialize(model) if form == "dense" else factorize(model)
    elif isinstance(model, LayerwiseNet):
        rewritten = dense_layers(model) if form == "dense" else plain_layers(model)
    elif form == "factorized":
        raise ExportError(
            "an uncompressed hourglass has no factorized form; export it with form='dense' "
            "or convert it to a T-Net first"
        )
    else:
        rewritten = model
    return fold_batchnorm(rewritten).eval()


def _check_exportable(model: nn.Module) -> None:
    if not isinstance(model, (TNet, LayerwiseNet, *KNOWN_MODELS)):
        raise ExportError(
            f"model is a {type(model).__name__}; expected a T-Net, a LayerwiseNet or a "
            "StackedHourglass, BearpawHourglass or PoseNet"
        )


def export_onnx(
    model: nn.Module | str | os.PathLike,
    path: str | os.PathLike,
    form: str = "factorized",
    *,
    opset: int = DEFAULT_OPSET,
    input_size: int | tuple[int, int] = 256,
    dynamic_batch: bool = True,
    atol: float = FP32_ATOL,
    rtol: float = FP32_RTOL,
    validate: bool = True,
    check: str | os.PathLike | None = None,
    check_samples: int = CHECK_SAMPLES,
    max_drop: float | None = None,
    check_images: str | os.PathLike | None = None,
    precision: str = "fp32",
    format: str = "onnx",
    keep_io_types: bool = False,
    calibrate: str | os.PathLike | None = None,
    calibration_samples: int | None = None,
    calibration_images: str | os.PathLike | None = None,
    reduce_range: bool = True,
    force: bool = True,
) -> ExportReport:
    """Export a T-Net, a layer-wise network or a dense hourglass to ONNX (float32), validated with
    ONNX Runtime.

    The graph keeps the network's own input and output conventions: a PoseNet takes a
    channels-last image and returns one tensor of stacked heatmaps.

    The model itself is left as it was (device, dtype, training flag).

    Parameters
    ----------
    model
        A :class:`~tcompress.TNet`, a :class:`~tcompress.layerwise.LayerwiseNet`, a dense network
        of a known layout (:class:`~tcompress.models.StackedHourglass`,
        :class:`~tcompress.models.BearpawHourglass`, :class:`~tcompress.models.PoseNet`) or a file
        that :func:`tcompress.load` reads.
    path
        Output file; written atomically (:func:`~tcompress.checkpoint.atomic_write`), and only if
        validation passes.
    form
        ``"factorized"`` (three-convolution form, Tucker; two convolutions, MPS; the per-layer
        chains of a layer-wise network) or ``"dense"``
        (block kernels rebuilt and BatchNorms folded: the fused dense form).
    opset
        ONNX opset (17 by default: supported by every ONNX Runtime release since 1.12).
    input_size
        Height and width of the traced input (one int for square); the batch axis stays dynamic
        with ``dynamic_batch``. For a hourglass, spatial sizes must be divisible by
        4 * 2**depth.
    atol, rtol
        An output passes validation when max |ONNX - PyTorch| <= atol + rtol * max |PyTorch|.
    validate
        Check the file with ``onnx.checker`` and compare ONNX Runtime with PyTorch on seeded inputs
        at batch 1 and 3; any failure raises :class:`ExportError` and leaves no file.
    check, check_samples, max_drop, check_images
        Labelled data (``"synthetic"`` or an MPII-style set; ``check_images``: its image folder)
        on whose first ``check_samples`` validation images the file's PCKh@0.5 is compared with
        the PyTorch model's (:mod:`tcompress.export.task`); a drop above ``max_drop`` points
        (default :data:`~tcompress.export.task.MAX_DROP` of the precision) raises
        :class:`ExportError` and leaves no file.
    precision
        ``"fp32"``; ``"fp16"`` (:mod:`tcompress.export.fp16`: every weight and activation in half
        precision, float32 inputs and outputs with ``keep_io_types``; validated with a tolerance
        made for half precision, on an execution provider with float16 kernels where one is
        present, else with its weights cast back to float32, which the report says); ``"int8"``
        (:mod:`tcompress.export.quantize`: static QDQ quantization calibrated on
        ``calibrate``). The float32 file is always built and validated first.
    format
        ``"onnx"``, or ``"ort"``: ONNX Runtime's mobile format (:mod:`tcompress.export.mobile`;
        ``path`` ends in ``.ort``), checked to match its ONNX source.
    calibrate, calibration_samples, calibration_images
        INT8: the images the activation ranges are calibrated on (``"synthetic"``, an image
        folder or an MPII-style set; labels unused), how many, and an MPII set's image folder.
    reduce_range
        INT8: 7-bit weights (default), which no CPU saturates; False: 8-bit weights, for x86
        CPUs with VNNI and ARM ones (x86 CPUs without VNNI can saturate their products:
        :func:`tcompress.export.quantize.saturating_cpu`; the report's notes say when the
        exporting CPU is one of them).
    force
        Replace an existing ``path`` (the default); False refuses one, even one created while
        the file was being made (:class:`~tcompress.errors.OutputError`).

    Shapes
    ------
    input ``image``: (N, C, H, W) (PoseNet: (N, H, W, C); the metadata entry
    ``tcompress.input_layout`` says ``NCHW`` or ``NHWC``); outputs ``heatmaps_<stack>``:
    (N, n_joints, H / 4, W / 4) (PoseNet: one output ``heatmaps``, (N, stacks, n_joints, H / 4,
    W / 4); a network converted with ``family=``: ``output`` or ``output_<i>``).
    """
    if not isinstance(model, nn.Module):
        from tcompress.serialize import load

        model = load(model)
    _check_exportable(model)
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    step = model_io(model).size_multiple
    if any(s < step or s % step for s in size):
        depth = getattr(model.config, "depth", None)
        raise ExportError(
            f"input size {size[0]}x{size[1]} does not fit a hourglass of depth {depth}; "
            f"expected multiples of {step}"
        )
    was_training = model.training
    reference = model.eval()
    if precision not in EXPORT_PRECISIONS:
        raise ExportError(
            f"precision {precision!r} is unknown; expected one of {', '.join(EXPORT_PRECISIONS)}"
        )
    if format not in FILE_FORMATS:
        raise ExportError(
            f"format {format!r} is unknown; expected one of {', '.join(FILE_FORMATS)}"
        )
    if format == "ort" and not os.fspath(path).endswith(".ort"):
        raise ExportError(
            f"output '{os.fspath(path)}' does not end in .ort; ONNX Runtime reads its mobile "
            "format by that suffix"
        )
    if precision == "int8" and calibrate is None:
        raise ExportError(
            f"precision='int8' needs calibration images: {param('calibrate', metavar='DATA')}"
        )
    if not isinstance(reduce_range, bool):
        raise ExportError(f"{param('reduce_range')} is {reduce_range!r}; expected True or False")
    if not reduce_range and precision != "int8":
        raise ExportError(
            f"{param('reduce_range', False)} keeps 8-bit INT8 weights and applies to "
            f"{param('precision', 'int8')} only; the file asked for is {precision}"
        )
    if precision == "fp16" and format == "ort":
        raise ExportError(
            "precision='fp16' with format='ort' is refused: ONNX Runtime's converter stores the "
            "weights of a float16 file as float32 in the .ort file (larger than the float32 one)"
        )
    task = None
    if check is not None:
        task = dict(
            data=check,
            n=check_samples,
            max_drop=MAX_DROP[precision] if max_drop is None else max_drop,
            images=check_images,
        )
    stages = dict(
        precision=precision,
        format=format,
        keep_io_types=keep_io_types,
        calibrate=calibrate,
        calibration_samples=calibration_samples,
        calibration_images=calibration_images,
        reduce_range=reduce_range,
    )
    try:
        report = _export(
            reference,
            path,
            form,
            opset,
            size,
            dynamic_batch,
            atol,
            rtol,
            validate,
            task,
            stages,
            force,
        )
    finally:
        model.train(was_training)
    log.info("exported %s form to %s", form, path)
    return report


def _export(
    reference, path, form, opset, size, dynamic_batch, atol, rtol, validate, task, stages, force
):
    io = model_io(reference)
    # The file is float32 whatever the model's dtype: what ONNX Runtime runs on every provider.
    prepared = deployable(reference, form).float()
    device = next(prepared.parameters()).device
    example = io.example(1, size).to(device)
    names = output_names(prepared, example)
    report = ExportReport(
        path=os.fspath(path),
        form=form,
        opset=opset,
        input_size=size,
        params=len_params(prepared),
        file_bytes=0,
        outputs=names,
    )

    def write(tmp: str) -> None:
        if stages["precision"] == "fp32" and stages["format"] == "onnx":
            write_fp32(tmp)
        else:
            _stages(tmp, path, write_fp32, reference, size, validate, report, stages, io)
        if task is not None:
            report.task = task_check(tmp_view(tmp), reference, image_size=size[0], **task)
            if not report.task.passed:
                t = report.task
                raise ExportError(
                    f"export to '{os.fspath(path)}' failed the task check: PCKh@0.5 "
                    f"{t.pckh_exported:.2f} against {t.pckh_pytorch:.2f} for the PyTorch model on "
                    f"{t.images} images of {t.data}, a drop of {t.drop:.2f} points (at most "
                    f"{t.max_drop:g} allowed: {param('max_drop')})" + _saturation_hint(report)
                )

    def tmp_view(tmp: str) -> str:
        """The temporary file under a name ONNX Runtime reads by its suffix (``.ort``)."""
        if stages["format"] != "ort":
            return tmp
        view = tmp + ".ort"
        if not os.path.exists(view):
            os.link(tmp, view)
            cleanup.append(view)
        return view

    cleanup: list[str] = []

    def write_fp32(tmp: str) -> None:
        dynamic = {name: {0: "batch"} for name in [INPUT_NAME, *names]} if dynamic_batch else None
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript-based exporter, not dynamo: on these plain-convolution graphs both
            # validate and keep the shared factors shared, and run alike in ONNX Runtime
            # (0.98-1.02x), but dynamo's files are 1-5% larger, it exports 2.4-6.8x slower and
            # needs onnxscript (benchmarks/bench_exporters.py, docs/records/exporters.json).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                prepared,
                (example,),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        _record_layout(tmp, io)
        if validate:
            report.validation = validate_onnx(
                tmp,
                reference,
                input_size=size,
                atol=atol,
                rtol=rtol,
                batches=(1, 3) if dynamic_batch else (1,),
                output_names=names,
            )
            if not report.validation.ok:
                raise ExportError(
                    f"export to '{os.fspath(path)}' failed validation: "
                    + "; ".join(report.validation.problems)
                )

    try:
        atomic_write(path, write, force=force)
    finally:
        for leftover in cleanup:
            if os.path.exists(leftover):
                os.remove(leftover)
    report.file_bytes = os.path.getsize(path)
    report.precision, report.format = stages["precision"], stages["format"]
    return report


def _stages(tmp, target, write_fp32, reference, size, validate, report, stages, io) -> None:
    """The float32 file, validated, then converted to the asked precision and format in a private
    folder beside the output ``target`` (:func:`~tcompress.checkpoint.scratch_folder`); the result
    is copied to ``tmp``."""
    import shutil

    from tcompress.checkpoint import scratch_folder

    with scratch_folder(target) as work:
        stage = os.path.join(work, "fp32.onnx")
        write_fp32(stage)
        if stages["precision"] == "fp16":
            from tcompress.export.fp16 import to_fp16

            half = to_fp16(
                stage,
                os.path.join(work, "fp16.onnx"),
                keep_io_types=stages["keep_io_types"],
                reference=reference if validate else None,
                input_size=size,
            )
            report.validation = half.validation or report.validation
            report.notes.extend(half.notes)
            stage = half.path
        elif stages["precision"] == "int8":
            from tcompress.export.quantize import DEFAULT_IMAGES, calibration_images, quantize_int8

            n = stages["calibration_samples"] or DEFAULT_IMAGES
            images = calibration_images(
                stages["calibrate"], n, size, io, images=stages["calibration_images"]
            )
            quantized = quantize_int8(
                stage,
                os.path.join(work, "int8.onnx"),
                images,
                reduce_range=stages["reduce_range"],
            )
            report.quantization = quantized.to_dict()
            if quantized.saturation:
                report.notes.append(quantized.saturation)
            stage = os.path.join(work, "int8.onnx")
        if stages["format"] == "ort":
            from tcompress.export.mobile import to_ort

            converted = to_ort(stage, os.path.join(work, "model.ort"), validate=validate)
            report.notes.extend(getattr(converted, "notes", []) or [])
            stage = os.path.join(work, "model.ort")
        shutil.copyfile(stage, tmp)


def _saturation_hint(report: ExportReport) -> str:
    """What a refused INT8 export adds when the CPU that scored it saturates its 8-bit
    weights (the quantization's ``saturating_cpu``)."""
    cpu = (report.quantization or {}).get("saturating_cpu")
    if cpu is None:
        return ""
    return (
        f"; this CPU ({cpu}) adds pairs of 8-bit products in 16 bits, which can saturate: "
        f"quantize with 7-bit weights for it (the default, without "
        f"{param('reduce_range', False)}), or check the file on the CPU it is for"
    )


def _record_layout(path: str, io: ModelIO) -> None:
    """Name the image input's layout in the file's metadata, for readers that cannot tell
    (N, C, H, W) from (N, H, W, C) by the shape alone, and the network's own pixel normalisation
    where it has one (``tcompress.pixel_mean`` / ``tcompress.pixel_std``, comma-separated)."""
    import onnx

    proto = onnx.load(path)
    entries = {INPUT_LAYOUT_KEY: "NHWC" if io.channels_last else "NCHW"}
    if io.pixel_mean is not None:
        entries[PIXEL_MEAN_KEY] = ",".join(repr(float(v)) for v in io.pixel_mean)
        entries[PIXEL_STD_KEY] = ",".join(repr(float(v)) for v in io.pixel_std)
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, path)


def len_params(model: nn.Module) -> int:
    """Parameters and buffers that end up as initializers, each shared tensor counted once."""
    seen = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            seen[id(tensor)] = tensor.numel()
    return sum(seen.values())
