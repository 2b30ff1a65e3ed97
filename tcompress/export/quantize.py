"""INT8 ONNX files: static quantization of an exported float32 file with ONNX Runtime's tools.

:func:`quantize_int8` takes a float32 file written by :func:`tcompress.export_onnx` and writes its
INT8 counterpart: ONNX Runtime's pre-processing (``quant_pre_process``: its graph optimisation
and shape inference), calibration of every activation's range on a few images, then
``quantize_static`` in the **QDQ** format (QuantizeLinear / DequantizeLinear pairs around
standard operators, which ONNX Runtime's CPU provider fuses into integer kernels when it loads
the file) with **int8 weights, one scale per output channel, 7-bit by default**.
:func:`calibration_images` turns a data spec (``"synthetic"``, an image folder, an MPII set)
into the images calibration needs, in the file's own input convention.

Defaults, as measured (``benchmarks/bench_int8.py``, record in ``docs/records/int8_choices.json``)
--------------------------------------------------------------------------------------------
Speed on the paper configuration (4 stacks, f = 128, random weights; 256x256, batch 1, two
intra-op threads, ONNX Runtime 1.32 CPU provider on an x86 CPU with AVX-512 VNNI; one
interleaved run, other jobs sharing the two cores), as ratios to the float32 original; accuracy
as the PCKh@0.5 drop from each float32 file on 500 held-out synthetic images, mean of three
subjects (the bundled hourglass, its 3x Tucker T-Net 2,2,3,2,32,32,2,2 as converted, and that
T-Net fine-tuned 860 steps), calibration on 32 synthetic training images:

- ``activation_type="uint8"``. Unsigned activations are what ONNX Runtime's x86 integer
  convolutions take (u8 x s8): with signed ones the files ran at 0.86x (the original) and 1.58x
  (the T-Net 4,4,3,2,64,64,3,3) against 2.98x and 4.17x with unsigned ones, and lost a little
  more (0.62 point against 0.50, both with MinMax).
- ``calibration_method="percentile"`` (99.999th percentile of each activation's histogram).
  It lost 0.27 point where MinMax lost 0.50 (each subject: 0.52 / -0.14 / 0.14 against 0.57 /
  0.43 / 0.50) and took as long on the bundled model; MinMax's loss grows with the calibration
  images, its ranges following the rarest values (fine-tuned T-Net: -0.19 at 8 images, 0.50 at
  32, 1.89 at 128). Entropy lost 5.2 points and took 20x longer. The method does not change
  the graph, so not the speed.
- ``exclude=()``. Leaving the first and the score convolutions, or the heads and scores, in
  float32 gained 0.1 point (0.37 and 0.40 against MinMax's 0.50; none on the fine-tuned T-Net)
  and cost 4-13% of the speed.
- ``per_channel=True``: one weight scale per output channel, as ONNX Runtime recommends for
  convolutions. Per-tensor scales measured no worse here (0.38 point, 0.94-1.10x the speed),
  but per-channel scales let the per-layer copies of a shared factor quantize to the same
  bytes, so the INT8 file stores it once (:func:`share_identical_initializers`).
- 32 calibration images (:data:`DEFAULT_IMAGES`).
- ``reduce_range=True``: 7-bit weights, which every CPU multiplies without saturating
  (``benchmarks/bench_int8_saturation.py``, record ``docs/records/int8_saturation.json``). On
  an x86 CPU without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime adds pairs of u8 x s8
  products in 16 bits, which clamp: there the fine-tuned 3x Tucker T-Net's INT8 file with
  8-bit weights scored 4.2% PCKh against 68.7% for its float32 file, and 69.3% with 7-bit
  weights. Where nothing saturates, 7-bit weights cost about as much as 8-bit ones: run
  without integer kernels (what VNNI and ARM CPUs compute), the three subjects lost 0.39 / 1.12
  / -0.95 points against 0.62 / 0.06 / -0.14 (means 0.19 and 0.18); on the AVX-512 VNNI
  machine of the record above, 0.75 against 0.50 point with MinMax calibration, at the same
  speed (the graph and the kernels are the same). An INT8 file cannot know the CPU that will
  run it, so the default is the one that works on all of them; ``reduce_range=False``
  (``tcompress export --full-range``) keeps 8-bit weights for CPUs with VNNI and ARM ones,
  and :func:`saturating_cpu` says when the CPU doing the quantization is not one of those: the
  report's :attr:`~QuantizationReport.notes` say so.

On those settings the INT8 T-Net 4,4,3,2,64,64,3,3 (factorized export) ran 4.2x faster than the
float32 original and 1.4x faster than the original quantized the same way, in 0.098x its file
size.

Every failure is an :class:`~tcompress.errors.ExportError` with a one-line message, and the
output is written atomically: nothing is left after a failure.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcompress.errors import BenchError, ExportError, param
from tcompress.export.bench import PRECISION_KEY, _first_line
from tcompress.export.validate import (
    FileReport,
    check_output,
    compare_output,
    output_path,
    read_source,
    session_options,
)

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from tcompress.models.io import ModelIO

log = logging.getLogger(__name__)

#: Activation types (``activation_type=``): unsigned (the default) or signed 8-bit.
ACTIVATION_TYPES = ("uint8", "int8")
#: Calibration methods (``calibration_method=``): ONNX Runtime's MinMax, Entropy, Percentile.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEFAULT_ACTIVATION = "uint8"
DEFAULT_CALIBRATION = "percentile"
#: Calibration images taken from a data spec when no count is given.
DEFAULT_IMAGES = 32
#: Groups of nodes ``exclude=`` can name besides node names and patterns: ``"first"``, the
#: convolutions reading the image input; ``"outputs"``, the nodes writing a graph output (a
#: hourglass's score convolutions).
EXCLUDE_GROUPS = ("first", "outputs")
#: Operators whose float or integer execution :attr:`QuantizationReport.float_nodes` reports.
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: ONNX metadata entries the quantized file carries besides the source's own.
QUANTIZATION_KEY = "tcompress.quantization"
#: Most images, and most bytes of intermediate tensors, a histogram calibration pass holds.
_CHUNK = 8
_CALIBRATION_BYTES = 1 << 30
#: Histogram bins of the entropy calibrator (ONNX Runtime's KL-divergence threshold search over
#: 128 quantized bins): ``quantize_static``'s own 128 leave that search a single candidate.
ENTROPY_BINS = 512
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_INTEGER_OPS = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm")


@dataclass
class QuantizationReport(FileReport):
    """What :func:`quantize_int8` wrote, and with which settings.

    Attributes
    ----------
    path, source
        The INT8 file written and the float32 file it came from.
    activation_type, weight_type
        ``"uint8"`` or ``"int8"``; weights are always ``"int8"``.
    calibration_method
        One of :data:`CALIBRATION_METHODS`.
    per_channel, reduce_range
        One weight scale per output channel; 7-bit weights.
    calibration_images
        Images the activation ranges were calibrated on.
    excluded
        The nodes ``exclude`` named (resolved to node names), left in float32.
    float_nodes
        Every compute node (:data:`COMPUTE_OPS`) of the file whose weight is not int8: the
        excluded ones and any the quantizer could not take.
    quantized_nodes
        Compute nodes with int8 weights.
    file_bytes, source_bytes
        Sizes on disk of the INT8 and the float32 file (their ratio: :attr:`size_ratio`).
    output_error
        max |INT8 - float32| / max |float32| over the outputs, worst over the first
        ``check_images`` calibration images (``None`` when none were checked): how far the
        quantized outputs moved. Not a pass/fail test: judge the task by PCKh.
    notes
        Anything the run had to work around.
    shared_initializers
        Per-layer copies of a shared factor that quantized to the same bytes and were merged
        into one initializer (:func:`share_identical_initializers`).
    saturating_cpu
        The quantizing CPU, named, when its integer kernels can saturate this file's 8-bit
        weights (:func:`saturating_cpu`); None for 7-bit weights or any other CPU.
    """

    path: str
    source: str
    activation_type: str
    weight_type: str
    calibration_method: str
    per_channel: bool
    reduce_range: bool
    calibration_images: int
    excluded: list[str]
    float_nodes: list[str]
    quantized_nodes: int
    file_bytes: int
    source_bytes: int
    output_error: float | None = None
    notes: list[str] = field(default_factory=list)
    shared_initializers: int = 0  # byte-identical weight copies merged into one
    saturating_cpu: str | None = None

    @property
    def saturation(self) -> str | None:
        """The note (:func:`saturation_note`) on a CPU that saturates the file, else None."""
        if self.saturating_cpu is None:
            return None
        return saturation_note(self.saturating_cpu, self.output_error)


def quantize_int8(
    source: str | os.PathLike,
    output: str | os.PathLike,
    images: Iterable[Any],
    *,
    activation_type: str = DEFAULT_ACTIVATION,
    calibration_method: str = DEFAULT_CALIBRATION,
    per_channel: bool = True,
    exclude: str | Iterable[str] = (),
    reduce_range: bool = True,
    percentile: float = 99.999,
    check_images: int = 4,
) -> QuantizationReport:
    """Statically quantize a float32 ONNX file to INT8 (QDQ format, int8 weights) with ONNX
    Runtime, calibrating activation ranges on ``images``.

    Parameters
    ----------
    source
        A float32 ONNX file written by :func:`tcompress.export_onnx` (one image input named in
        its ``tcompress.input_layout`` metadata, NCHW or NHWC); never modified.
    output
        The INT8 file; written atomically (replacing an existing file), never the source. It
        keeps the source's metadata and adds ``tcompress.precision = int8`` and the settings
        (``tcompress.quantization``).
    images
        Calibration images: float arrays (numpy, or anything ``numpy.asarray`` takes) shaped as
        the file's input with batch 1, ``(1, C, H, W)`` or, for an NHWC file, ``(1, H, W, C)``
        (a 3-d array is taken as one image without its batch axis), already in the file's pixel
        normalisation: :func:`calibration_images` makes them from a data spec.
    activation_type
        ``"uint8"`` (default: the fast path of ONNX Runtime's x86 kernels) or ``"int8"``.
    calibration_method
        ``"percentile"`` (default), ``"minmax"`` or ``"entropy"`` (ONNX Runtime's calibrators).
    per_channel
        One weight scale per output channel (default) instead of one per tensor.
    exclude
        Nodes to leave in float32: node names, ``fnmatch`` patterns over them
        (``"/scores.*"``) or the groups of :data:`EXCLUDE_GROUPS` (``"first"``, ``"outputs"``).
        An entry that matches no node is an error.
    reduce_range
        7-bit weights (default), which no CPU saturates; False: 8-bit weights, for x86 CPUs with
        VNNI and ARM ones (on x86 without VNNI their products can saturate: ONNX Runtime's
        advice; see the module's docstring for what each choice measured). When the quantizing
        CPU is one of those and ``reduce_range`` is False, the report notes it.
    percentile
        The percentile calibration keeps (``calibration_method="percentile"`` only).
    check_images
        Calibration images on which both files are run for :attr:`QuantizationReport.output_error`
        (0: none).

    Returns
    -------
    QuantizationReport

    Raises
    ------
    ExportError
        A missing, non-ONNX or already quantized source, an output that is the source or has no
        folder, an unknown setting, no images or images of the wrong shape, dtype or values, an
        ``exclude`` entry that matches no node, or a failure of ONNX Runtime's tools.
    """
    import numpy as np

    activation = _choice("activation_type", activation_type, ACTIVATION_TYPES)
    method = _choice("calibration_method", calibration_method, CALIBRATION_METHODS)
    for name, value in (("per_channel", per_channel), ("reduce_range", reduce_range)):
        if not isinstance(value, bool):
            raise ExportError(f"{param(name)} is {value!r}; expected True or False")
    if isinstance(percentile, bool) or not isinstance(percentile, int | float):
        raise ExportError(f"{param('percentile')} is {percentile!r}; expected a number in (0, 100]")
    if not 0 < percentile <= 100:
        raise ExportError(f"{param('percentile')} is {percentile!r}; expected a number in (0, 100]")
    if isinstance(check_images, bool) or not isinstance(check_images, int) or check_images < 0:
        raise ExportError(
            f"{param('check_images')} is {check_images!r}; expected a whole number >= 0"
        )
    patterns = _patterns(exclude)

    source = os.fspath(source)
    proto = _read_source(source)
    image_input = _image_input(proto, source)
    layout = _layout_of(proto, image_input, source)
    out_path = check_output("output", output_path("output", output), source, "another output path")
    batch = _prepare_images(images, image_input, layout, source)

    with tempfile.TemporaryDirectory(prefix="tcompress-int8-") as work:
        prepared = os.path.join(work, "prepared.onnx")
        notes = _pre_process(source, prepared)
        graph = _read_prepared(prepared, source)
        excluded = _resolve_exclude(patterns, graph, image_input.name)
        report = QuantizationReport(
            path=os.fspath(output),
            source=source,
            activation_type=activation,
            weight_type="int8",
            calibration_method=method,
            per_channel=per_channel,
            reduce_range=reduce_range,
            calibration_images=len(batch),
            excluded=excluded,
            float_nodes=[],
            quantized_nodes=0,
            file_bytes=0,
            source_bytes=os.path.getsize(source),
            notes=notes,
        )

        def write(tmp: str) -> None:
            _quantize(prepared, tmp, batch, image_input.name, report, percentile)
            quantized = _finish(tmp, proto, report)
            report.float_nodes, report.quantized_nodes = _float_nodes(quantized)
            if check_images:
                report.output_error = _output_error(
                    source, tmp, batch[:check_images], image_input.name
                )
                if not np.isfinite(report.output_error):
                    raise ExportError(
                        f"the INT8 file made from '{source}' gives non-finite outputs on the "
                        "calibration images; expected finite heatmaps"
                    )
            report.saturating_cpu = None if reduce_range else saturating_cpu()
            if report.saturation:
                report.notes.append(report.saturation)

        try:
            from tcompress.checkpoint import atomic_write

            atomic_write(out_path, write)
        except ExportError:
            raise
        except Exception as e:  # onnxruntime's tools raise assorted types
            raise ExportError(f"quantizing '{source}' failed: {_first_line(e)}") from None
    report.file_bytes = os.path.getsize(out_path)
    log.info("quantized %s to %s (%s activations, %s)", source, out_path, activation, method)
    return report


def saturating_cpu() -> str | None:
    """The CPU this process runs on, named, when ONNX Runtime's u8 x s8 integer kernels on it can
    saturate; ``None`` when they cannot or the CPU is not known.

    On x86 without VNNI (AVX2, or AVX-512 without its VNNI extension) ONNX Runtime multiplies
    uint8 activations by int8 weights with ``vpmaddubsw``, which adds each pair of products in a
    16-bit integer and clamps it; VNNI's ``vpdpbusd`` accumulates in 32 bits, and ARM's kernels
    widen too. 7-bit weights (``reduce_range=True``) keep every pair within 16 bits."""
    import platform

    import torch

    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return None
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:  # an older torch cannot tell: say nothing
        return None
    try:
        found = capabilities()
    except Exception:  # the capability probe is best effort
        return None
    if found.get("avx512_vnni") or found.get("avx_vnni"):
        return None
    extension = "AVX-512 without VNNI" if found.get("avx512_f") else "x86 without VNNI"
    return f"{found.get('cpu_name') or 'x86'}, {extension}"


def saturation_note(cpu: str, output_error: float | None = None) -> str:
    """What :attr:`QuantizationReport.notes` says about an 8-bit-weight file quantized on a CPU
    that :func:`saturating_cpu` names."""
    measured = "" if output_error is None else f" (output error {output_error:.3g} here)"
    return (
        f"this CPU ({cpu}) adds pairs of u8 x s8 products in 16 bits, which can saturate: the "
        f"file's outputs on it{measured} can be far worse than on CPUs with VNNI or on ARM, "
        "which compute without saturating. To run INT8 on x86 CPUs without VNNI, quantize "
        "with 7-bit weights, the default: reduce_range=True (tcompress export without "
        "--full-range)"
    )


def calibration_images(
    data: str | os.PathLike,
    n: int = DEFAULT_IMAGES,
    input_size: int | tuple[int, int] = 256,
    convention: ModelIO | str | os.PathLike | Any = "NCHW",
    *,
    seed: int = 0,
    images: str | os.PathLike | None = None,
) -> list[np.ndarray]:
    """The first ``n`` training images of a data spec, as float32 arrays of batch 1 in a model's
    input convention: what :func:`quantize_int8` calibrates on.

    Parameters
    ----------
    data
        What :func:`tcompress.data.make_dataset` reads, split ``"train"``: ``"synthetic"``, an
        MPII-style annotation file or folder, or a folder of images (unlabeled images are
        enough: only the pixels are used).
    n
        Images wanted; a data set with fewer gives all it has.
    input_size
        Side of the square images (a pair of equal sides, as ``export_onnx`` takes it, too).
    convention
        The model's input convention: a :class:`~tcompress.models.io.ModelIO`, a network
        (its ``model_io``), an ONNX file (its ``tcompress.input_layout`` and
        ``tcompress.pixel_mean`` / ``tcompress.pixel_std`` metadata, as
        :class:`~tcompress.evaluation.run.OnnxModel` reads them), or a layout, ``"NCHW"`` or
        ``"NHWC"`` (tcompress's own pixel normalisation).
    seed
        The data set's seed (synthetic scenes, augmentation).
    images
        MPII: the folder the annotations' image paths are relative to.

    Returns
    -------
    list of numpy.ndarray
        ``(1, C, input_size, input_size)`` arrays, or ``(1, input_size, input_size, C)`` for a
        channels-last convention, normalised as the model takes them.

    Raises
    ------
    ExportError
        A bad count, size or convention, or a data set that holds no images (the data set's own
        errors, :class:`~tcompress.errors.DataError`, pass through).
    """
    import numpy as np
    import torch

    from tcompress.data import make_dataset

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ExportError(f"{param('n')} is {n!r}; expected a whole number >= 1 of images")
    if isinstance(input_size, tuple | list) and len(input_size) == 2:
        if input_size[0] != input_size[1]:
            raise ExportError(
                f"{param('input_size')} is {tuple(input_size)!r}; calibration images are square: "
                "expected one side, or a pair of equal ones"
            )
        input_size = input_size[0]
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 4:
        raise ExportError(f"{param('input_size')} is {input_size!r}; expected a whole number >= 4")
    io = _convention(convention)
    dataset = make_dataset(
        data, "train", input_size, input_size // 4, n=n, seed=seed, images=images
    )
    if len(dataset) == 0:
        raise ExportError(
            f"calibration data {os.fspath(data)!r} holds no images; expected at least one"
        )
    out = []
    for i in range(min(n, len(dataset))):
        image = torch.as_tensor(np.asarray(dataset[i]["image"], dtype=np.float32))
        if image.dim() != 3 or image.shape[0] != io.in_channels:
            raise ExportError(
                f"calibration data {os.fspath(data)!r} gives images of shape {tuple(image.shape)}; "
                f"expected ({io.in_channels}, H, W) for a model of {io.in_channels} input channels"
            )
        with torch.no_grad():
            adapted = io.adapt(image[None])
        out.append(np.ascontiguousarray(adapted.numpy(), dtype=np.float32))
    return out


# --- settings --------------------------------------------------------------------------------


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    text = getattr(value, "name", value)  # also ONNX Runtime's QuantType / CalibrationMethod
    if isinstance(text, str):
        key = text.lower()
        key = {"quint8": "uint8", "qint8": "int8"}.get(key, key)
        if key in choices:
            return key
    raise ExportError(f"{param(name)} is {value!r}; expected one of {', '.join(choices)}")


def _patterns(exclude: Any) -> list[str]:
    if isinstance(exclude, str):
        exclude = (exclude,)
    try:
        patterns = list(exclude or ())
    except TypeError:
        raise ExportError(
            f"{param('exclude')} is {exclude!r}; expected node names or patterns"
        ) from None
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ExportError(
                f"{param('exclude')} holds {p!r}; expected node names, patterns or one of "
                f"{', '.join(EXCLUDE_GROUPS)}"
            )
    return patterns


def _convention(convention: Any) -> ModelIO:
    from torch import nn

    from tcompress.models.io import ModelIO, model_io

    if isinstance(convention, ModelIO):
        return convention
    if isinstance(convention, nn.Module):
        return model_io(convention)
    if isinstance(convention, str) and convention.upper() in ("NCHW", "NHWC"):
        return ModelIO(3, ("heatmaps",), channels_last=convention.upper() == "NHWC")
    if isinstance(convention, str | os.PathLike) and os.fspath(convention).endswith(".onnx"):
        path = os.fspath(convention)
        proto = _read_source(path)
        image = _image_input(proto, path)
        layout = _layout_of(proto, image, path)
        metadata = {entry.key: entry.value for entry in proto.metadata_props}
        from tcompress.export.bench import LAYOUTS, PIXEL_MEAN_KEY, PIXEL_STD_KEY, metadata_floats

        channels = image.type.tensor_type.shape.dim[LAYOUTS[layout][0]].dim_value or 3
        try:
            mean, std = (
                metadata_floats(metadata, key, f"ONNX file '{path}'")
                for key in (PIXEL_MEAN_KEY, PIXEL_STD_KEY)
            )
        except BenchError as e:
            raise ExportError(str(e)) from None
        try:
            return ModelIO(
                channels, ("heatmaps",), layout == "NHWC", pixel_mean=mean, pixel_std=std
            )
        except ValueError as e:
            raise ExportError(f"ONNX file '{path}': {e}") from None
    raise ExportError(
        f"{param('convention')} is {convention!r}; expected a ModelIO, a network, an ONNX file "
        "or a layout, 'NCHW' or 'NHWC'"
    )


# --- the source, the output and the images ----------------------------------------------------


def _read_source(path: str) -> onnx.ModelProto:
    proto = read_source(path)
    quantized = sorted(
        {n.op_type for n in proto.graph.node if n.op_type in (*_QDQ_OPS, *_INTEGER_OPS)}
    )
    if quantized:
        raise ExportError(
            f"'{path}' is already quantized (it holds {', '.join(quantized)} nodes); expected a "
            "float32 file written by export_onnx"
        )
    return proto


def _image_input(proto: onnx.ModelProto, path: str) -> onnx.ValueInfoProto:
    from onnx import TensorProto

    from tcompress.export.bench import _image_input as image_input

    try:
        image = image_input(proto.graph, f"'{path}'")
    except BenchError as e:
        raise ExportError(str(e)) from None
    elem = image.type.tensor_type.elem_type
    if elem != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(elem).lower()
        raise ExportError(
            f"'{path}': input '{image.name}' holds {kind}; expected a float32 file written by "
            "export_onnx"
        )
    return image


def _layout_of(proto: onnx.ModelProto, image: onnx.ValueInfoProto, path: str) -> str:
    from tcompress.export.bench import _layout

    try:
        return _layout(proto, image, f"'{path}'")
    except BenchError as e:
        raise ExportError(str(e)) from None


def _prepare_images(
    images: Any, image: onnx.ValueInfoProto, layout: str, path: str
) -> list[np.ndarray]:
    """Every calibration image checked against the input and made a float32 (1, ...) array."""
    import numpy as np

    from tcompress.export.bench import LAYOUTS

    if images is None or isinstance(images, str | bytes | os.PathLike):
        raise ExportError(
            f"images is {images!r}; expected an iterable of image arrays (calibration_images "
            "makes them from a data spec)"
        )
    try:
        items = list(images)
    except TypeError:
        raise ExportError(
            f"images is a {type(images).__name__}; expected an iterable of image arrays"
        ) from None
    if not items:
        raise ExportError("images is empty; expected at least one calibration image")
    dims = image.type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    fixed[0] = 1
    c, h, w = LAYOUTS[layout]
    want = ["C", "H", "W"]
    spelled = ["1", *([""] * 3)]
    for axis, label in zip((c, h, w), want):
        spelled[axis] = str(fixed[axis]) if fixed[axis] else label
    expected = f"({', '.join(spelled)}) float32 arrays ({layout})"
    out = []
    for i, item in enumerate(items):
        try:
            array = np.asarray(item.detach().cpu() if hasattr(item, "detach") else item)
        except Exception:
            raise ExportError(
                f"calibration image {i} is a {type(item).__name__}; expected {expected}"
            ) from None
        if array.ndim == 3:
            array = array[None]
        if not np.issubdtype(array.dtype, np.floating):
            raise ExportError(
                f"calibration image {i} holds {array.dtype}; expected {expected}, normalised as "
                f"'{path}' takes them"
            )
        if array.ndim != 4 or any(f is not None and f != s for f, s in zip(fixed, array.shape)):
            raise ExportError(
                f"calibration image {i} has shape {tuple(array.shape)}; expected {expected} for "
                f"'{path}'"
            )
        if out and array.shape != out[0].shape:
            raise ExportError(
                f"calibration image {i} has shape {tuple(array.shape)}, image 0 "
                f"{tuple(out[0].shape)}; expected images of one size"
            )
        if not np.isfinite(array).all():
            raise ExportError(f"calibration image {i} holds NaN or Inf; expected finite pixels")
        out.append(np.ascontiguousarray(array, dtype=np.float32))
    return out


# --- ONNX Runtime's tools ---------------------------------------------------------------------


def _pre_process(source: str, prepared: str) -> list[str]:
    """``quant_pre_process`` (optimisation, symbolic and ONNX shape inference); without the
    symbolic shape inference if that fails, as ONNX Runtime's own tool advises. The tools write
    scratch files (``sym_shape_infer_temp.onnx``, external ``.data`` files) into the working
    folder: they run in the prepared file's private folder."""

    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, prepared = os.path.abspath(source), os.path.abspath(prepared)
    try:
        with _quiet(), contextlib.chdir(os.path.dirname(prepared)):
            quant_pre_process(source, prepared)
        return []
    except Exception as first:  # the shape-inference tools raise assorted types
        try:
            with _quiet(), contextlib.chdir(os.path.dirname(prepared)):
                quant_pre_process(source, prepared, skip_symbolic_shape=True)
        except Exception:
            raise ExportError(
                f"ONNX Runtime's quantization pre-processing failed on '{source}': "
                f"{_first_line(first)}"
            ) from None
        return [
            "pre-processed without ONNX Runtime's symbolic shape inference, which gave up on "
            f"this graph ({_first_line(first)}); ONNX's own shape inference ran"
        ]


def _read_prepared(path: str, source: str) -> onnx.GraphProto:
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    if not len(graph.node):
        raise ExportError(f"ONNX Runtime's pre-processing left no graph of '{source}'")
    return graph


def _resolve_exclude(patterns: list[str], graph: onnx.GraphProto, image_name: str) -> list[str]:
    names = [n.name for n in graph.node if n.name]
    outputs = {o.name for o in graph.output}
    chosen: list[str] = []
    for pattern in patterns:
        if pattern == "first":
            found = [n.name for n in graph.node if image_name in n.input and n.op_type == "Conv"]
        elif pattern == "outputs":
            found = [n.name for n in graph.node if outputs.intersection(n.output)]
        else:
            found = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not found:
            convs = [n.name for n in graph.node if n.op_type in COMPUTE_OPS and n.name]
            example = f" such as '{convs[0]}'" if convs else ""
            raise ExportError(
                f"{param('exclude')} entry {pattern!r} matches no node; expected node names"
                f"{example}, fnmatch patterns over them or one of {', '.join(EXCLUDE_GROUPS)}"
            )
        chosen.extend(name for name in found if name not in chosen)
    return chosen


class _Reader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of images."""

    def __init__(self, name: str, images: list[np.ndarray]) -> None:
        self.name, self.images, self.position = name, images, 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.images):
            return None
        self.position += 1
        return {self.name: self.images[self.position - 1]}


_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _calibrate(
    prepared: str,
    work: str,
    images: list[np.ndarray],
    input_name: str,
    calibration: str,
    percentile,
) -> str:
    """Activation ranges of the pre-processed graph on ``images``, written as ONNX Runtime's
    calibration cache (a JSON file in ``work``); returns its path.

    ``quantize_static`` would calibrate by itself, but it neither lets the entropy calibrator
    have more histogram bins than the quantized range (its 128 for 128 leave the KL search one
    candidate, the whole range: entropy then *is* a min-max) nor bounds the memory of the
    histogram calibrators, which keep every intermediate tensor of the images of a pass."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, save_tensors_data

    options: dict[str, Any] = {}
    if calibration == "entropy":
        options = {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128}
    elif calibration == "percentile":
        options = {"percentile": float(percentile)}
    calibrator = create_calibrator(
        Path(prepared),
        _quantized_op_types(),
        augmented_model_path=os.path.join(work, "augmented.onnx"),
        calibrate_method=getattr(CalibrationMethod, _METHODS[calibration]),
        extra_options=options,
    )
    if calibration == "minmax":  # two numbers per tensor and image: every image in one pass
        step = len(images)
    else:
        step = max(1, min(_CHUNK, _CALIBRATION_BYTES // max(1, _image_bytes(prepared))))
    for start in range(0, len(images), step):
        calibrator.collect_data(_Reader(input_name, images[start : start + step]))
    ranges = calibrator.compute_data()
    cache = os.path.join(work, "ranges.json")
    save_tensors_data(ranges, cache)
    return cache


def _quantized_op_types() -> list[str] | None:
    """The operator types ``quantize_static`` quantizes by default (and calibrates for)."""
    try:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    except ImportError:  # another layout of ONNX Runtime's package: calibrate every tensor
        return None
    return sorted({*QLinearOpsRegistry, *QDQRegistry})


def _quantize(
    prepared: str,
    tmp: str,
    images: list[np.ndarray],
    input_name: str,
    report: QuantizationReport,
    percentile: float,
) -> None:
    """Calibrate (:func:`_calibrate`) and quantize ``prepared`` into ``tmp``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = report.calibration_method
    activations = QuantType.QUInt8 if report.activation_type == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="tcompress-calibration-") as work, _quiet():
        cache = _calibrate(prepared, work, images, input_name, method, percentile)
        quantize_static(
            prepared,
            tmp,
            None,
            quant_format=QuantFormat.QDQ,
            per_channel=report.per_channel,
            reduce_range=report.reduce_range,
            activation_type=activations,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(report.excluded),
            calibrate_method=getattr(CalibrationMethod, _METHODS[method]),
            calibration_cache_path=cache,
        )


def _image_bytes(prepared: str) -> int:
    """Bytes of every float tensor of one image's pass through the pre-processed graph (shapes
    from its shape inference, batch 1; tensors of unknown shape are not counted)."""
    import math

    import onnx
    from onnx import TensorProto

    graph = onnx.load(prepared, load_external_data=False).graph
    total = 0
    for info in (*graph.value_info, *graph.output):
        kind = info.type.tensor_type
        if not info.type.HasField("tensor_type") or kind.elem_type != TensorProto.FLOAT:
            continue
        dims = list(kind.shape.dim)
        if dims and all(d.HasField("dim_value") for d in dims[1:]):
            total += 4 * math.prod(d.dim_value for d in dims[1:])
    return total


def _finish(tmp: str, source: onnx.ModelProto, report: QuantizationReport) -> onnx.ModelProto:
    """The quantized file with the source's metadata and the settings added; returns it."""
    import json

    import onnx

    model = onnx.load(tmp)
    report.shared_initializers = share_identical_initializers(model)
    entries = {e.key: e.value for e in model.metadata_props}
    entries.update({e.key: e.value for e in source.metadata_props})
    entries[PRECISION_KEY] = "int8"
    settings = {
        k: getattr(report, k)
        for k in (
            "activation_type",
            "weight_type",
            "calibration_method",
            "per_channel",
            "reduce_range",
            "calibration_images",
            "excluded",
        )
    }
    entries[QUANTIZATION_KEY] = json.dumps(settings, separators=(",", ":"))
    del model.metadata_props[:]
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, tmp)
    return model


def share_identical_initializers(model: onnx.ModelProto) -> int:
    """Make quantized weights with the same type, shape and bytes one initializer; returns how
    many were dropped.

    ONNX Runtime's pre-processing folds the per-channel scale and shift that follows a shared
    factor (Tucker's U6) into a per-layer copy of it. With one weight scale per output channel,
    every copy whose scales are positive quantizes to the same int8 values as the others (the
    layer's scale moves into its DequantizeLinear scale), so the copies are merged back here and
    the INT8 file stores the shared factor once, each layer keeping its own scales and bias.
    Only the integer tensors DequantizeLinear nodes read are merged.
    """
    import hashlib

    graph = model.graph
    weights = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    weights -= {i.name for i in graph.input}
    first: dict[tuple, str] = {}
    renamed: dict[str, str] = {}
    kept = []
    for init in graph.initializer:
        if init.name not in weights or not init.raw_data:
            kept.append(init)
            continue
        key = (init.data_type, tuple(init.dims), hashlib.sha256(init.raw_data).digest())
        if key in first:
            renamed[init.name] = first[key]
        else:
            first[key] = init.name
            kept.append(init)
    if not renamed:
        return 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(renamed)


def _float_nodes(model: onnx.ModelProto) -> tuple[list[str], int]:
    """Compute nodes whose weight is not an int8 initializer behind a DequantizeLinear, and the
    number of those whose weight is."""
    from onnx import TensorProto

    initializers = {i.name: i.data_type for i in model.graph.initializer}
    dequantized = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            dequantized[node.output[0]] = initializers.get(node.input[0])
    floats, quantized = [], 0
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        if dequantized.get(node.input[1]) in (TensorProto.INT8, TensorProto.UINT8):
            quantized += 1
        else:
            floats.append(node.name or node.output[0])
    return floats, quantized


def _output_error(source: str, quantized: str, images: list[np.ndarray], name: str) -> float:
    """The worst max |INT8 - float32| / max |float32| over the outputs and ``images``
    (:attr:`~tcompress.export.validate.OutputCheck.max_rel_diff`): no tolerance, only how far
    the outputs moved."""
    import numpy as np
    import onnxruntime as ort

    options = session_options()
    sessions = [
        ort.InferenceSession(p, options, providers=["CPUExecutionProvider"])
        for p in (source, quantized)
    ]
    names = [o.name for o in sessions[0].get_outputs()]
    worst = 0.0
    for image in images:
        ref, got = (s.run(None, {name: image}) for s in sessions)
        for output, a, b in zip(names, got, ref):
            check = compare_output(len(image), output, a.astype(np.float64), b, atol=0.0, rtol=0.0)
            worst = max(worst, check.max_rel_diff)
    return worst


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantization tools log through the root logger (warnings such as 'please
    pre-process') and its histogram calibrators print their progress: keep the log at error
    level and the prints out of the caller's output while they run."""
    import io

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
