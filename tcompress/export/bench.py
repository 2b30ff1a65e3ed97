"""How much work an ONNX graph asks for, and how fast ONNX Runtime runs it.

:func:`count_macs` counts the multiply-accumulates of one inference from the graph alone, float
and quantized operators alike, and how many of them run in int8; :func:`bench_onnx` times
several files in ONNX Runtime on one or more execution providers, interleaved so that the load
of a shared machine weighs on every model alike, and reports each one as ratios to the first
file on the same provider.

Every kind of file ``tcompress export`` writes is measured: float32, float16 (float16 inputs
included), INT8 (QDQ, and the operator format other tools write: ``QLinearConv``,
``ConvInteger``, ``QLinearMatMul``, ``MatMulInteger``) and ONNX Runtime's mobile format
``.ort``. An ``.ort`` file holds no graph ``onnx`` can read: it is timed and its input read from
ONNX Runtime, and its MACs are counted from the ONNX file of the same name beside it when there
is one that matches it (``tcompress export --format ort`` writes the ``.ort`` alone), else
unknown. :func:`precision_of` names a file's precision.

An image input is (N, C, H, W) or, channels last, (N, H, W, C) (a PoseNet's); the metadata entry
:data:`INPUT_LAYOUT_KEY` that tcompress writes at export says which, and files without it are
read by their shape (:func:`input_layout`).

Both import onnx, onnxruntime and numpy inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from tcompress.errors import BenchError, param

if TYPE_CHECKING:
    import onnx

#: The keys of :attr:`MacCount.by_kind`: convolutions with a 1x1 kernel, with a larger kernel,
#: depthwise convolutions (one input channel per group), and everything else that is counted
#: (``Gemm``, ``MatMul``, ``ConvTranspose`` and their quantized forms).
KINDS = ("conv1x1", "conv_kxk", "depthwise", "other")

_EXPECTED = "expected an ONNX model file, such as one written by torch.onnx.export or onnx.save"
_EXPECTED_ORT = (
    "expected an ORT-format model file, such as one written by tcompress export --format ort"
)
_IMAGE = "expected one image input, (N, C, H, W) or (N, H, W, C)"

#: The ONNX metadata entry naming the image input's layout, one of :data:`LAYOUTS`.
INPUT_LAYOUT_KEY = "tcompress.input_layout"
#: ONNX metadata entries with the network's own pixel normalisation, comma-separated per
#: channel: the input is ``(pixel - mean) / std``, pixels in [0, 1] (absent: tcompress's own).
PIXEL_MEAN_KEY = "tcompress.pixel_mean"
PIXEL_STD_KEY = "tcompress.pixel_std"
#: The ONNX metadata entry naming the file's precision, written by tcompress's fp16 and INT8
#: exports (``"fp16"``, ``"int8"``); a tcompress file without it is float32.
PRECISION_KEY = "tcompress.precision"
#: The precisions :func:`precision_of` names.
PRECISIONS = ("fp32", "fp16", "int8")
#: Image input layouts -> the axes of (channels, height, width).
LAYOUTS = {"NCHW": (1, 2, 3), "NHWC": (3, 1, 2)}
#: The execution provider :func:`bench_onnx` runs on unless told otherwise.
DEFAULT_PROVIDER = "CPUExecutionProvider"
#: The suffix by which ONNX Runtime, and :func:`bench_onnx`, tell an ORT-format file (the same
#: as :data:`tcompress.export.mobile.SUFFIX`, which imports this module).
ORT_SUFFIX = ".ort"


class _Op(NamedTuple):
    """How a counted operator is counted: its family, and the positions of its data input and
    its weight (or second operand) among the node's inputs."""

    family: str  # "conv", "conv_transpose", "gemm" or "matmul"
    x: int
    w: int
    integer: bool  # runs in int8 whatever feeds it


#: (domain, operator) -> how it is counted. The integer forms are those of operator-format
#: quantization (QLinearConv: x, x_scale, x_zero_point, w, ...; QGemm is ONNX Runtime's own).
_COUNTED = {
    ("", "Conv"): _Op("conv", 0, 1, False),
    ("", "ConvTranspose"): _Op("conv_transpose", 0, 1, False),
    ("", "Gemm"): _Op("gemm", 0, 1, False),
    ("", "MatMul"): _Op("matmul", 0, 1, False),
    ("", "QLinearConv"): _Op("conv", 0, 3, True),
    ("", "ConvInteger"): _Op("conv", 0, 1, True),
    ("", "QLinearMatMul"): _Op("matmul", 0, 3, True),
    ("", "MatMulInteger"): _Op("matmul", 0, 1, True),
    ("com.microsoft", "QGemm"): _Op("gemm", 0, 3, True),
}
#: Operators whose presence makes a graph INT8 (:func:`precision_of`).
_INT8_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
    | {op for (_, op), spec in _COUNTED.items() if spec.integer}
)
#: ONNX Runtime's quantized operators (domain com.microsoft) that onnx's shape inference does not
#: know, and the standard operator of the same output shape each stands in as while shapes are
#: inferred: its name, the inputs it reads (None: every third from the third, QLinearConcat's
#: tensors) and the attributes it keeps. Without them no shape after, say, a QLinearAdd (the
#: residual sums of an operator-format hourglass) would be known.
_STAND_INS = {
    "QLinearAdd": ("Add", (0, 3), ()),
    "QLinearMul": ("Mul", (0, 3), ()),
    "QLinearSigmoid": ("Identity", (0,), ()),
    "QLinearLeakyRelu": ("Identity", (0,), ()),
    "QLinearSoftmax": ("Identity", (0,), ()),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), ()),
    "QLinearAveragePool": (
        "AveragePool",
        (0,),
        ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"),
    ),
    "QLinearConcat": ("Concat", None, ("axis",)),
    "QGemm": ("Gemm", (0, 3), ("transA", "transB")),
}
#: Constant tensors of at most this many entries have their Casts folded before shape inference
#: (a Resize's scales in a float16 file): onnx propagates the values of Constants, not of Casts.
_FOLD_LIMIT = 64
#: ONNX Runtime's names of the input element types a file may take -> numpy's.
_ORT_INPUT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
}
#: Where an execution provider missing from this onnxruntime comes from.
_PROVIDER_PACKAGES = {
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu",
    "DmlExecutionProvider": "onnxruntime-directml",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
}


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates of one inference, and the parameters of the graph.

    Attributes
    ----------
    total
        Multiply-accumulates of one run at the given input size and batch (bias additions are
        not counted); the sum of :attr:`by_kind`.
    by_kind
        ``total`` split by the kinds of :data:`KINDS`; every kind is present, possibly 0.
    params
        Entries of the graph's initializers, each initializer counted once however many nodes
        use it (in a quantized graph, its scales and zero points too).
    constant
        Multiply-accumulates of counted nodes whose inputs are all constants (for instance a
        weight rebuilt from factors): ONNX Runtime folds them once when it loads the model, so
        they are *not* part of ``total``.
    int8
        The part of ``total`` that runs in int8: quantized operators (``QLinearConv``,
        ``ConvInteger``, ``QLinearMatMul``, ``MatMulInteger``, ``QGemm``), and float operators
        whose input and weight both come straight from a ``DequantizeLinear`` (a QDQ graph's
        quantized nodes, which ONNX Runtime fuses into integer kernels). The rest runs in float.
    """

    total: int
    by_kind: dict[str, int]
    params: int
    constant: int = 0
    int8: int = 0

    @property
    def int8_fraction(self) -> float | None:
        """``int8 / total`` (None for a graph without counted work)."""
        return self.int8 / self.total if self.total else None

    def to_dict(self) -> dict:
        return {**asdict(self), "int8_fraction": self.int8_fraction}


@dataclass(frozen=True)
class BenchResult:
    """What :func:`bench_onnx` measured for one file on one execution provider. Ratios are to
    the first file measured on the same provider.

    Attributes
    ----------
    path
        The file as given.
    input_shape
        The measured input in the file's own layout: ``(batch, C, H, W)``, or
        ``(batch, H, W, C)`` for a channels-last one.
    input_layout
        ``"NCHW"`` or ``"NHWC"`` (channels last), see :func:`input_layout`.
    size_bytes
        Bytes on disk: the file and any external-data files it names.
    size_ratio
        ``size_bytes`` of the first file / ``size_bytes`` of this one (how many times smaller).
    params
        Parameters (initializer entries), each initializer counted once (None: not known, an
        ``.ort`` file without its ONNX file beside it).
    params_ratio
        ``params`` of the first file / ``params`` of this one (``None`` if either is unknown or
        this one has none).
    macs
        Multiply-accumulates of one run at the measured input size and batch
        (:func:`count_macs`); None where unknown (an ``.ort`` file without its ONNX file).
    mac_bound
        ``macs`` of the first file / ``macs`` of this one: the speed-up an ideal runtime, whose
        time is proportional to the multiply-accumulates, would reach (``None`` without MACs).
    median_ms, min_ms
        Median and minimum latency of one run over the timed rounds, in milliseconds.
    speedup
        Median latency of the first file / median latency of this one.
    bound_fraction
        ``speedup / mac_bound``: how much of the ideal speed-up the runtime delivers.
    latencies_ms
        Every timed round, in order.
    input_dtype
        The measured input's element type, the file's own: ``"float32"``, or ``"float16"`` for
        a float16 file exported without ``keep_io_types``.
    precision
        ``"fp32"``, ``"fp16"`` or ``"int8"`` (:func:`precision_of`). An ``.ort`` file's is its
        metadata entry :data:`PRECISION_KEY`, else ``"fp16"`` for a float16 input, else
        ``"fp32"`` if it carries tcompress's layout entry (tcompress names every other
        precision), else that of the ONNX file beside it; None where none of these tells.
    provider
        The execution provider the session actually ran on (``session.get_providers()[0]``:
        ONNX Runtime falls back to the CPU when the provider asked for cannot start).
    requested_provider
        The provider asked for.
    int8_macs
        The part of ``macs`` run in int8 (:attr:`MacCount.int8`); None without MACs.
    int8_fraction
        ``int8_macs / macs``; None without MACs.
    macs_from
        The ONNX file the MACs and parameters were counted from: ``path`` itself, the ONNX file
        beside an ``.ort`` one, or None.
    notes
        What is worth knowing about the row (where MACs came from, a provider fallback).
    """

    path: str
    input_shape: tuple[int, int, int, int]
    input_layout: str
    size_bytes: int
    size_ratio: float
    params: int | None
    params_ratio: float | None
    macs: int | None
    mac_bound: float | None
    median_ms: float
    min_ms: float
    speedup: float
    bound_fraction: float | None
    latencies_ms: list[float]
    input_dtype: str = "float32"
    precision: str | None = None
    provider: str = DEFAULT_PROVIDER
    requested_provider: str = DEFAULT_PROVIDER
    int8_macs: int | None = None
    int8_fraction: float | None = None
    macs_from: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def channels(self) -> int:
        """Channels of the measured input."""
        return self.input_shape[LAYOUTS[self.input_layout][0]]

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the measured input."""
        _, h, w = LAYOUTS[self.input_layout]
        return self.input_shape[h], self.input_shape[w]


def input_layout(
    shape: Sequence[int | str | None],
    metadata: Mapping[str, str] | None = None,
    channels: int = 3,
    where: str = "the model",
) -> str:
    """``"NCHW"`` or ``"NHWC"``: the layout of a 4-d image input.

    The metadata entry :data:`INPUT_LAYOUT_KEY` says it where the file has one (tcompress writes
    it at export). Without it the shape decides: channels last when the last dim is ``channels``
    and dim 1 is not, as in a (N, 256, 256, 3) input; anything else, symbolic dims included, is
    channels first.

    Parameters
    ----------
    shape
        The input's dims: ints where fixed, names (or None) where symbolic.
    metadata
        The file's metadata entries (``metadata_props``, or ONNX Runtime's
        ``custom_metadata_map``).
    channels
        Channels of the images the file is meant for.
    where
        How error messages name the file.
    """
    value = (metadata or {}).get(INPUT_LAYOUT_KEY)
    if value is not None:
        if value not in LAYOUTS:
            raise BenchError(
                f"{where}: metadata {INPUT_LAYOUT_KEY} is {value!r}; expected one of "
                f"{', '.join(LAYOUTS)}"
            )
        return value
    if len(shape) != 4:
        raise BenchError(f"{where}: the image input has shape {tuple(shape)}; {_IMAGE}")
    return "NHWC" if shape[3] == channels and shape[1] != channels else "NCHW"


def metadata_floats(
    metadata: Mapping[str, str], key: str, where: str = "the model"
) -> tuple[float, ...] | None:
    """A comma-separated metadata entry, such as :data:`PIXEL_MEAN_KEY` or
    :data:`PIXEL_STD_KEY`, as numbers; None where the file has no such entry.

    ``metadata`` is the file's entries (``metadata_props``, or ONNX Runtime's
    ``custom_metadata_map``); ``where`` is how the error message names the file.
    """
    if key not in metadata:
        return None
    try:
        return tuple(float(v) for v in metadata[key].split(","))
    except ValueError:
        raise BenchError(
            f"{where} has metadata {key}={metadata[key]!r}; expected comma-separated numbers"
        ) from None


def precision_of(model: onnx.ModelProto | str | os.PathLike) -> str:
    """The precision of an ONNX graph: ``"fp32"``, ``"fp16"`` or ``"int8"``.

    The metadata entry :data:`PRECISION_KEY` says it where the file has one (tcompress's fp16
    and INT8 exports write it; its value is returned as written). Without it the graph decides:
    quantization nodes (``QuantizeLinear``/``DequantizeLinear``, or integer operators such as
    ``QLinearConv`` and ``ConvInteger``) make it ``"int8"``, float16 initializers or a float16
    input ``"fp16"``, anything else ``"fp32"``.

    Parameters
    ----------
    model
        An ``onnx.ModelProto`` or the path of an ONNX file (external data is not read).
    """
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = _read_model(model)
    elif not isinstance(model, onnx.ModelProto):
        raise BenchError(
            f"model is a {type(model).__name__}; expected an onnx.ModelProto or an ONNX file path"
        )
    written = {e.key: e.value for e in model.metadata_props}.get(PRECISION_KEY)
    return written if written else _graph_precision(model)


def count_macs(
    model: onnx.ModelProto | str | os.PathLike,
    input_size: int | tuple[int, int],
    batch: int = 1,
) -> MacCount:
    """Count the multiply-accumulates of one inference of an ONNX graph.

    The graph's single image input, ``(N, C, H, W)`` or channels last ``(N, H, W, C)``
    (:func:`input_layout`), is given the batch ``N`` and the spatial size ``(H, W)`` asked for
    (replacing symbolic or fixed dims alike), shapes are propagated with
    ``onnx.shape_inference``, and every ``Conv`` adds (output elements) x (C_in / group) x kh x kw;
    ``ConvTranspose`` adds (input elements) x (C_out / group) x kh x kw, and ``Gemm`` and
    ``MatMul`` (output elements) x (inner dimension). Their quantized forms count alike
    (``QLinearConv`` and ``ConvInteger`` as ``Conv``, ``QLinearMatMul`` and ``MatMulInteger`` as
    ``MatMul``, ``QGemm`` as ``Gemm``), and in a QDQ graph the float operators between
    ``DequantizeLinear`` and ``QuantizeLinear`` are counted as any others; :attr:`MacCount.int8`
    says how many run in int8. Other operators (activations, pooling, normalisation, resizing)
    are not counted. Only the top-level graph is counted.

    Parameters
    ----------
    model
        An ``onnx.ModelProto`` (left unchanged) or the path of an ONNX file. External data is
        not read: shapes are enough.
    input_size
        ``H = W = input_size``, or ``(H, W)``.
    batch
        ``N``; the count is proportional to it.

    Returns
    -------
    MacCount
        ``total``, ``by_kind`` (see :data:`KINDS`), ``params``, ``constant`` and ``int8``.

    Raises
    ------
    BenchError
        A missing or non-ONNX file, a graph without exactly one 4-d image input, a bad size or
        batch, or a counted node whose shapes cannot be inferred.
    """
    import onnx

    height, width = _spatial_size(input_size)
    _check_whole("batch", batch)
    if isinstance(model, (str, os.PathLike)):
        proto, where = _read_model(model), f"'{os.fspath(model)}'"
    elif isinstance(model, onnx.ModelProto):
        proto, where = model, "the model"
    else:
        raise BenchError(
            f"model is a {type(model).__name__}; expected an onnx.ModelProto or an ONNX file path"
        )
    return _count(proto, where, batch, height, width)


def bench_onnx(
    paths: Sequence[str | os.PathLike],
    input_size: int | tuple[int, int] | None = 256,
    batch: int = 1,
    threads: int = 2,
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    providers: str | Sequence[str] | None = None,
) -> list[BenchResult]:
    """Time ONNX and ORT-format files in ONNX Runtime and compare each with the first.

    Every file gets its own ``InferenceSession`` per execution provider (``threads`` intra-op
    threads, one inter-op thread, all graph optimisations, idle worker threads not spinning so
    that a session does not steal the cores from the next one). All models get the same seeded
    input, in each one's own layout and input type (float16 for a float16 file exported without
    ``keep_io_types``). After ``warmup`` untimed rounds, ``repeats`` rounds are timed, each
    running every file on every provider in turn, so that load drifts on a shared machine affect
    all alike. A device provider (CUDA) is timed as a caller sees it: ``session.run`` on host
    arrays, the copies of the input to the device and of the outputs back included.

    Files ending in ``.ort`` are ONNX Runtime's mobile format: ONNX Runtime loads them directly
    and gives their input; their MACs and parameters are counted from the ONNX file of the same
    name beside them (``x.onnx`` for ``x.ort``) when there is one with the same inputs, outputs
    and precision, and are otherwise unknown (None), as their notes say.

    Parameters
    ----------
    paths
        ONNX or ``.ort`` files; the first is the reference of every ratio.
    input_size
        Input height and width (``H = W = input_size``, or ``(H, W)``); ``None``: the first
        model's own, if its input has fixed height and width, else 256.
    batch
        Images per run.
    threads
        ONNX Runtime intra-op threads.
    repeats
        Timed rounds.
    warmup
        Untimed rounds before them.
    seed
        Seed of the input.
    progress
        Called with a short description of each phase as it starts (for progress displays).
    providers
        ONNX Runtime execution providers to run on, in order: a list of names, or one string of
        comma-separated names (``"CUDAExecutionProvider,CPUExecutionProvider"``; ``"CUDA"`` is
        short for ``"CUDAExecutionProvider"``). Default: :data:`DEFAULT_PROVIDER`. Each must be in
        ``onnxruntime.get_available_providers()``.

    Returns
    -------
    list of BenchResult
        One per file and provider: the files in the order given on the first provider, then on
        the next; ratios are to the first file on the same provider.

    Raises
    ------
    BenchError
        A missing or unreadable file, models that take different numbers of input channels, a
        model whose fixed input shape does not fit the batch and size asked for, a model that
        ONNX Runtime cannot load or run, a provider this onnxruntime does not have, or a bad
        setting.
    """
    if input_size is not None:
        height, width = _spatial_size(input_size)
    for name, value, least in (
        ("batch", batch, 1),
        ("threads", threads, 1),
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
        ("seed", seed, 0),
    ):
        _check_whole(name, value, least)
    if isinstance(paths, (str, os.PathLike)) or not len(paths):
        raise BenchError(f"paths is {paths!r}; expected a non-empty list of ONNX files")
    progress = progress or (lambda phase: None)

    import numpy as np
    import onnxruntime as ort

    names = _check_providers(providers, ort)
    files: list[_File] = []
    for path in paths:
        path = os.fspath(path)
        progress(f"Reading {os.path.basename(path)}")
        described = _describe_ort(path, ort) if _is_ort(path) else _describe_onnx(path)
        if files and described.channels != files[0].channels:
            raise BenchError(
                f"input channels differ: '{files[0].path}' takes {files[0].channels}, "
                f"{described.where} takes {described.channels}; expected every model to take "
                "the same input"
            )
        files.append(described)
    if input_size is None:
        height, width = _exported_size(files[0].dims, files[0].layout)
    for f in files:
        _check_fits(f.dims, f.where, batch, height, width, f.layout)
        if f.graph is None:
            continue
        progress(f"Counting the MACs of {os.path.basename(f.path)}")
        if not f.ort_format:
            f.macs = _count(f.graph, f.where, batch, height, width)
        else:  # the ONNX file beside an .ort one: a failure leaves the MACs unknown
            name = os.path.basename(f.macs_from)
            try:
                f.macs = _count(f.graph, f"'{f.macs_from}'", batch, height, width)
                f.notes.append(f"MACs and parameters counted from {name} beside it")
            except BenchError as e:
                f.notes.append(f"MACs unknown: {name} beside it cannot be counted: {e}")
                f.macs_from = None
        f.graph = None

    # One image for all, handed to a channels-last file in its layout.
    image = np.random.default_rng(seed).standard_normal(
        (batch, files[0].channels, height, width), dtype=np.float32
    )
    by_layout = {"NCHW": image, "NHWC": np.ascontiguousarray(image.transpose(0, 2, 3, 1))}
    runs: list[_Run] = []
    for provider in names:
        for f in files:
            progress(f"Loading {os.path.basename(f.path)} on {_short(provider)}")
            options = _session_options(ort, threads, ort_format=f.ort_format)
            try:
                session = ort.InferenceSession(f.path, sess_options=options, providers=[provider])
            except Exception as e:  # onnxruntime's errors derive from Exception only
                raise BenchError(
                    f"{f.where} cannot be loaded by ONNX Runtime on {provider}: {_first_line(e)}"
                ) from None
            feed = {f.input: by_layout[f.layout].astype(f.dtype, copy=False)}
            runs.append(_Run(f, provider, session.get_providers()[0], session, feed))

    for r in range(warmup):
        progress(f"Warming up ({r + 1}/{warmup})")
        for run in runs:
            run.time()
    for r in range(repeats):
        progress(f"Timing round {r + 1}/{repeats}")
        for run in runs:
            run.latencies.append(run.time())

    results = []
    for run in runs:
        first = next(other for other in runs if other.requested == run.requested)
        results.append(_result(run, first))
    return results


# --- files, sessions and results ----------------------------------------------------------------


@dataclass
class _File:
    """One file as :func:`bench_onnx` reads it, before it is timed."""

    path: str
    where: str  # how messages name it
    ort_format: bool
    input: str
    dims: list  # ints where fixed, names or None where symbolic
    layout: str
    channels: int
    dtype: Any  # numpy's
    size: int
    precision: str | None
    graph: onnx.ModelProto | None  # what the MACs are counted from
    macs_from: str | None
    notes: list[str] = field(default_factory=list)
    macs: MacCount | None = None


@dataclass
class _Run:
    """One file on one execution provider, and its latencies in seconds."""

    file: _File
    requested: str
    provider: str
    session: Any
    feed: dict
    latencies: list[float] = field(default_factory=list)

    def time(self) -> float:
        start = time.perf_counter()
        try:
            self.session.run(None, self.feed)
        except Exception as e:  # onnxruntime's errors derive from Exception only
            raise BenchError(
                f"{self.file.where} fails to run in ONNX Runtime on {self.provider}: "
                f"{_first_line(e)}"
            ) from None
        return time.perf_counter() - start


def _result(run: _Run, first: _Run) -> BenchResult:
    """``run`` measured, its ratios to ``first`` (the first file on the same provider)."""
    f, ref = run.file, first.file
    median = statistics.median(run.latencies)
    speedup = statistics.median(first.latencies) / median
    macs = f.macs.total if f.macs is not None else None
    params = f.macs.params if f.macs is not None else None
    ref_macs = ref.macs.total if ref.macs is not None else None
    ref_params = ref.macs.params if ref.macs is not None else None
    mac_bound = _ratio(ref_macs, macs)
    notes = list(f.notes)
    if run.provider != run.requested:
        notes.append(
            f"asked for {run.requested}, ONNX Runtime ran it on {run.provider} (the provider "
            "could not start)"
        )
    return BenchResult(
        path=f.path,
        input_shape=run.feed[f.input].shape,
        input_layout=f.layout,
        size_bytes=f.size,
        size_ratio=ref.size / f.size,
        params=params,
        params_ratio=_ratio(ref_params, params),
        macs=macs,
        mac_bound=mac_bound,
        median_ms=median * 1e3,
        min_ms=min(run.latencies) * 1e3,
        speedup=speedup,
        bound_fraction=speedup / mac_bound if mac_bound else None,
        latencies_ms=[t * 1e3 for t in run.latencies],
        input_dtype=str(run.feed[f.input].dtype),
        precision=f.precision,
        provider=run.provider,
        requested_provider=run.requested,
        int8_macs=f.macs.int8 if f.macs is not None else None,
        int8_fraction=f.macs.int8_fraction if f.macs is not None else None,
        macs_from=f.macs_from,
        notes=notes,
    )


def _describe_onnx(path: str) -> _File:
    """An ONNX file, read with onnx: its image input, layout, precision and graph."""
    where = f"'{path}'"
    proto = _read_model(path)
    image = _image_input(proto.graph, where)
    layout = _layout(proto, image, where)
    dims = _dim_list(image)
    return _File(
        path=path,
        where=where,
        ort_format=False,
        input=image.name,
        dims=dims,
        layout=layout,
        channels=_channels(dims, image.name, where, layout),
        dtype=_input_dtype(image, where),
        size=_size_on_disk(proto, path),
        precision=precision_of(proto),
        graph=proto,
        macs_from=path,
    )


def _describe_ort(path: str, ort) -> _File:
    """An ORT-format file, read through ONNX Runtime (its input, metadata and outputs), with the
    ONNX file beside it that its MACs are counted from, where there is a matching one."""
    import numpy as np

    where = f"'{path}'"
    _check_file(path, "ORT-format file", _EXPECTED_ORT)
    try:
        session = ort.InferenceSession(
            path,
            sess_options=_session_options(ort, 1, ort_format=True),
            providers=["CPUExecutionProvider"],
        )
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise BenchError(f"{where} cannot be loaded by ONNX Runtime: {_first_line(e)}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs) or "none"
        raise BenchError(f"{where} has {len(inputs)} inputs ({names}); {_IMAGE}")
    image = inputs[0]
    dims = list(image.shape)
    if len(dims) != 4:
        raise BenchError(f"{where}: input '{image.name}' is {len(dims)}-d; {_IMAGE}")
    if image.type not in _ORT_INPUT_TYPES:
        held = image.type.removeprefix("tensor(").removesuffix(")")
        raise BenchError(
            f"{where}: input '{image.name}' holds {held}; expected float32, float16 or float64 "
            "images"
        )
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    layout = input_layout(dims, metadata, where=where)
    dtype = np.dtype(_ORT_INPUT_TYPES[image.type])
    precision = metadata.get(PRECISION_KEY) or None
    if precision is None and dtype == np.float16:
        precision = "fp16"
    elif precision is None and INPUT_LAYOUT_KEY in metadata:
        precision = "fp32"  # tcompress names every other precision in the metadata
    described = _File(
        path=path,
        where=where,
        ort_format=True,
        input=image.name,
        dims=dims,
        layout=layout,
        channels=_channels(dims, image.name, where, layout),
        dtype=dtype,
        size=os.path.getsize(path),
        precision=precision,
        graph=None,
        macs_from=None,
    )
    outputs = [o.name for o in session.get_outputs()]
    del session
    _find_source(described, outputs)
    return described


def _find_source(ort_file: _File, outputs: list[str]) -> None:
    """Take the ONNX file of the same name beside an ORT-format one as the graph its MACs are
    counted from, if it has the same input (name and type), outputs and precision; else say in
    a note why the MACs are unknown."""
    import numpy as np

    source = os.path.splitext(ort_file.path)[0] + ".onnx"
    name = os.path.basename(source)
    if not os.path.isfile(source):
        ort_file.notes.append(
            "MACs unknown: onnx cannot read an ORT-format file's graph, and there is no "
            f"{name} beside it to count them from"
        )
        return
    try:
        proto = _read_model(source)
        image = _image_input(proto.graph, f"'{source}'")
        dtype = _input_dtype(image, f"'{source}'")
    except BenchError as e:
        ort_file.notes.append(f"MACs unknown: {name} beside it cannot be read: {e}")
        return
    theirs = (image.name, str(np.dtype(dtype)), [o.name for o in proto.graph.output])
    mine = (ort_file.input, str(np.dtype(ort_file.dtype)), outputs)
    if theirs != mine:
        ort_file.notes.append(
            f"MACs unknown: {name} beside it is another model (input {theirs[0]!r} of "
            f"{theirs[1]}, outputs {theirs[2]}; the .ort file's: {mine[0]!r} of {mine[1]}, "
            f"outputs {mine[2]})"
        )
        return
    precision = precision_of(proto)
    if ort_file.precision is not None and precision != ort_file.precision:
        ort_file.notes.append(
            f"MACs unknown: {name} beside it is {precision}, the .ort file {ort_file.precision}"
        )
        return
    ort_file.precision = precision
    ort_file.graph, ort_file.macs_from = proto, source


def _check_providers(providers: Any, ort) -> list[str]:
    """The execution providers asked for, in order and each once, checked to be available."""
    if providers is None:
        return [DEFAULT_PROVIDER]
    items = [providers] if isinstance(providers, str) else providers
    expected = "expected names of ONNX Runtime execution providers, such as 'CPUExecutionProvider'"
    if not isinstance(items, Sequence) or not all(isinstance(p, str) for p in items):
        raise BenchError(f"{param('providers')} is {providers!r}; {expected}")
    available = ort.get_available_providers()
    # Names as ONNX Runtime spells them, whatever the case and with or without the suffix.
    by_lower = {p.lower(): p for p in (*ort.get_all_providers(), *available)}
    names: list[str] = []
    for item in items:
        for name in (part.strip() for part in item.split(",")):
            if not name:
                continue
            full = (
                name if name.lower().endswith("executionprovider") else name + "ExecutionProvider"
            )
            name = by_lower.get(full.lower(), name)
            if name not in names:
                names.append(name)
    if not names:
        raise BenchError(f"{param('providers')} is {providers!r}; {expected}")
    missing = [n for n in names if n not in available]
    if missing:
        hints = "".join(
            f" ({n} comes with the {_PROVIDER_PACKAGES[n]} package)"
            for n in missing
            if n in _PROVIDER_PACKAGES
        )
        raise BenchError(
            f"{param('providers')} asks for {', '.join(repr(n) for n in missing)}, which this "
            f"onnxruntime {ort.__version__} does not have{hints}; expected one of "
            f"{', '.join(available)}"
        )
    return names


def _session_options(ort, threads: int, ort_format: bool):
    """The session settings every timed file gets (see :func:`bench_onnx`); an ORT-format file
    is told as such, so that ONNX Runtime reads it whatever the case of its suffix."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if ort_format:
        options.add_session_config_entry("session.load_model_format", "ORT")
    options.log_severity_level = 3  # errors only: the library does not write to the terminal
    return options


def _is_ort(path: str) -> bool:
    return path.lower().endswith(ORT_SUFFIX)


def _short(provider: str) -> str:
    """``"CPUExecutionProvider"`` -> ``"CPU"``."""
    return provider.removesuffix("ExecutionProvider") or provider


# --- reading and checking -------------------------------------------------------------------


def _check_file(path: str, what: str, expected: str) -> None:
    """A clear error for a path that is missing, a directory or empty."""
    if not os.path.exists(path):
        raise BenchError(f"{what} '{path}' does not exist")
    if os.path.isdir(path):
        raise BenchError(f"'{path}' is a directory; {expected}")
    if os.path.getsize(path) == 0:
        raise BenchError(f"'{path}' is empty (0 bytes); {expected}")


def _read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """The model in ``path``, without its external data; a clear error if it is not one."""
    import onnx
    from google.protobuf.message import Error as ProtobufError

    path = os.fspath(path)
    _check_file(path, "ONNX file", _EXPECTED)
    try:
        model = onnx.load(path, load_external_data=False)
    except ProtobufError:
        raise BenchError(f"'{path}' is not an ONNX model (not a protobuf); {_EXPECTED}") from None
    except OSError as e:
        raise BenchError(f"'{path}' cannot be read: {_first_line(e)}") from None
    # Protobuf parses many byte strings (a text file, say) into a message of unknown fields.
    if model.ir_version <= 0 or not model.HasField("graph") or not len(model.graph.node):
        raise BenchError(f"'{path}' is not an ONNX model (it holds no graph); {_EXPECTED}")
    return model


def _image_input(graph: onnx.GraphProto, where: str) -> onnx.ValueInfoProto:
    """The graph's one input that is not an initializer, checked to be 4-d."""
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs) or "none"
        raise BenchError(f"{where} has {len(inputs)} inputs ({names}); {_IMAGE}")
    image = inputs[0]
    kind = image.type.WhichOneof("value")
    shape = image.type.tensor_type.shape
    if kind != "tensor_type" or not image.type.tensor_type.HasField("shape") or len(shape.dim) != 4:
        rank = len(shape.dim) if kind == "tensor_type" else None
        got = f"{rank}-d" if rank is not None else f"a {kind}"
        raise BenchError(f"{where}: input '{image.name}' is {got}; {_IMAGE}")
    return image


def _layout(proto: onnx.ModelProto, image: onnx.ValueInfoProto, where: str) -> str:
    """The image input's layout (:func:`input_layout`), from the file's metadata or its shape."""
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    return input_layout(_dim_list(image), metadata, where=where)


def _dims(image: onnx.ValueInfoProto):
    return image.type.tensor_type.shape.dim


def _dim_list(image: onnx.ValueInfoProto) -> list[int | str | None]:
    """The input's dims as ONNX Runtime gives them: ints where fixed, names (or None) else."""
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in _dims(image)]


def _channels(dims: Sequence[int | str | None], name: str, where: str, layout: str) -> int:
    dim = dims[LAYOUTS[layout][0]]
    if not isinstance(dim, int):
        raise BenchError(
            f"{where}: input '{name}' has a symbolic channel dim ({dim or '?'}); "
            "expected a fixed number of channels"
        )
    return dim


def _exported_size(dims: Sequence[int | str | None], layout: str) -> tuple[int, int]:
    """The input's fixed height and width, or 256 x 256 where they are symbolic."""
    spatial = (dims[k] for k in LAYOUTS[layout][1:])
    return tuple(d if isinstance(d, int) else 256 for d in spatial)


def _check_fits(
    dims: Sequence[int | str | None], where: str, batch: int, height: int, width: int, layout: str
):
    """A fixed batch or spatial dim of the input must equal the one asked for."""
    _, h, w = LAYOUTS[layout]
    wanted = {0: batch, h: height, w: width}
    if all(not isinstance(dims[k], int) or dims[k] == v for k, v in wanted.items()):
        return
    shape = ", ".join(str(d) if isinstance(d, int) else d or "?" for d in dims)
    raise BenchError(
        f"{where} takes a fixed input shape ({shape}); batch {batch} at {height}x{width} does "
        "not fit it: expected the batch and input size it was exported for, or a model "
        "exported with dynamic axes"
    )


def _input_dtype(image: onnx.ValueInfoProto, where: str):
    """The numpy type of the image input's elements: float32, float16 (a float16 file exported
    without ``keep_io_types``) or float64."""
    import numpy as np
    from onnx import TensorProto

    dtypes = {
        TensorProto.FLOAT: np.float32,
        TensorProto.FLOAT16: np.float16,
        TensorProto.DOUBLE: np.float64,
    }
    elem = image.type.tensor_type.elem_type
    if elem not in dtypes:
        raise BenchError(
            f"{where}: input '{image.name}' holds {TensorProto.DataType.Name(elem).lower()}; "
            "expected float32, float16 or float64 images"
        )
    return dtypes[elem]


def _graph_precision(model: onnx.ModelProto) -> str:
    """:func:`precision_of` from the graph alone."""
    from onnx import TensorProto

    graph = model.graph
    if any(node.op_type in _INT8_OPS for node in graph.node):
        return "int8"
    half = any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer) or any(
        i.type.tensor_type.elem_type == TensorProto.FLOAT16 for i in graph.input
    )
    return "fp16" if half else "fp32"


def _check_whole(name: str, value: Any, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise BenchError(f"{name} is {value!r}; expected a whole number >= {least}")


def _spatial_size(input_size: Any) -> tuple[int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else input_size
    ok = isinstance(size, (tuple, list)) and len(size) == 2
    if not ok or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise BenchError(
            f"input_size is {input_size!r}; expected a whole number >= 1 or a pair (H, W) of them"
        )
    return int(size[0]), int(size[1])


def _size_on_disk(model: onnx.ModelProto, path: str) -> int:
    """Bytes of the file plus those of the external-data files its initializers name."""
    from onnx import TensorProto

    locations = set()
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    folder = os.path.dirname(os.path.abspath(path))
    extra = (os.path.join(folder, loc) for loc in sorted(locations))
    return os.path.getsize(path) + sum(os.path.getsize(f) for f in extra if os.path.isfile(f))


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _ratio(reference: int | None, value: int | None) -> float | None:
    return reference / value if reference is not None and value else None


# --- counting ---------------------------------------------------------------------------------


def _count(proto: onnx.ModelProto, where: str, batch: int, height: int, width: int) -> MacCount:
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    image = _image_input(graph, where)
    layout = _layout(model, image, where)
    _channels(_dim_list(image), image.name, where, layout)  # fixed channels, or a clear error
    dims = _dims(image)
    _, h, w = LAYOUTS[layout]
    for k, value in ((0, batch), (h, height), (w, width)):
        dims[k].dim_value = value  # replaces a dim_param: the two are a oneof
    # Shapes stored at export time would clash with the new input size: infer them afresh.
    del graph.value_info[:]
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    fed = "x".join(str(d.dim_value) for d in dims)
    inferred = _infer(_for_inference(model), f"{where} at input {fed}")

    shapes: dict[str, tuple[int, ...] | None] = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        if vi.type.WhichOneof("value") == "tensor_type" and vi.type.tensor_type.HasField("shape"):
            found = vi.type.tensor_type.shape.dim
            known = all(d.HasField("dim_value") for d in found)
            shapes[vi.name] = tuple(d.dim_value for d in found) if known else None
    params, seen = 0, set()
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
        if init.name not in seen:
            seen.add(init.name)
            params += math.prod(init.dims)

    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    constants = set(seen)
    by_kind = dict.fromkeys(KINDS, 0)
    folded = int8 = 0
    for node in graph.node:  # ONNX keeps nodes in topological order
        inputs = [name for name in node.input if name]
        constant = node.op_type == "Constant" or (
            bool(inputs) and all(name in constants for name in inputs)
        )
        if constant:
            constants.update(node.output)
        spec = _COUNTED.get(("" if node.domain == "ai.onnx" else node.domain, node.op_type))
        if spec is None:
            continue
        macs, kind = _node_macs(node, spec, shapes, where)
        if constant:
            folded += macs
            continue
        by_kind[kind] += macs
        operands = (node.input[spec.x], node.input[spec.w])
        if spec.integer or all(name in dequantized for name in operands):
            int8 += macs
    return MacCount(
        total=sum(by_kind.values()), by_kind=by_kind, params=params, constant=folded, int8=int8
    )


def _for_inference(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that onnx's shape inference sees through: Casts of small constants
    folded into Constants (:data:`_FOLD_LIMIT`), and ONNX Runtime's quantized operators replaced
    by their standard stand-ins (:data:`_STAND_INS`). Node outputs keep their names, so the
    shapes inferred are those of ``model``'s tensors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    values = {
        t.name: t
        for t in graph.initializer
        if t.data_location != TensorProto.EXTERNAL and math.prod(t.dims) <= _FOLD_LIMIT
    }
    for k, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and math.prod(value.dims) <= _FOLD_LIMIT:
                values[node.output[0]] = value
        elif node.op_type == "Cast" and node.domain in ("", "ai.onnx") and node.input[0] in values:
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            try:
                array = numpy_helper.to_array(values[node.input[0]])
                cast = array.astype(helper.tensor_dtype_to_np_dtype(to))
            except Exception:  # an unusual type: leave the Cast to shape inference
                continue
            tensor = numpy_helper.from_array(cast, node.output[0])
            graph.node[k].CopyFrom(
                helper.make_node("Constant", [], [node.output[0]], name=node.name, value=tensor)
            )
            values[node.output[0]] = tensor
        elif node.domain == "com.microsoft" and node.op_type in _STAND_INS:
            op, positions, kept = _STAND_INS[node.op_type]
            if any(a.name == "channels_last" and a.i for a in node.attribute):
                continue  # an NHWC pool: no standard operator of the same shape
            inputs = list(node.input)
            chosen = inputs[2::3] if positions is None else [inputs[p] for p in positions]
            stand_in = helper.make_node(op, chosen, list(node.output), name=node.name)
            stand_in.attribute.extend(a for a in node.attribute if a.name in kept)
            graph.node[k].CopyFrom(stand_in)
    return copy


def _infer(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Shape inference, strict first; a lenient pass if that fails (missing shapes are caught
    later, and only if a counted node needs them)."""
    from onnx import shape_inference

    try:
        return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as strict_error:  # onnx raises several unrelated types here
        try:
            return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:
            raise BenchError(
                f"{where}: shape inference fails: {_first_line(strict_error)}"
            ) from None


def _node_macs(node: onnx.NodeProto, spec: _Op, shapes: dict, where: str) -> tuple[int, str]:
    def shape(name: str) -> tuple[int, ...]:
        found = shapes.get(name)
        if found is None:
            label = node.name or node.output[0]
            raise BenchError(
                f"{where}: cannot count the MACs of {node.op_type} node '{label}': the shape of "
                f"'{name}' is unknown after shape inference; expected static shapes once the "
                "input's are fixed"
            )
        return found

    x, w = node.input[spec.x], node.input[spec.w]
    if spec.family == "conv":
        weight = shape(w)  # (C_out, C_in / group, kh, kw)
        macs = math.prod(shape(node.output[0])) * math.prod(weight[1:])
        group = next((at.i for at in node.attribute if at.name == "group"), 1)
        if group > 1 and weight[1] == 1:
            return macs, "depthwise"
        return macs, "conv1x1" if all(k == 1 for k in weight[2:]) else "conv_kxk"
    if spec.family == "conv_transpose":
        weight = shape(w)  # (C_in, C_out / group, kh, kw)
        return math.prod(shape(x)) * math.prod(weight[1:]), "other"
    a = shape(x)
    if spec.family == "gemm":
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        inner = a[0] if trans_a else a[1]
    else:  # MatMul and its integer forms, numpy semantics
        inner = a[-1]
    return math.prod(shape(node.output[0])) * inner, "other"
