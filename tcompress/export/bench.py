"""How much work an ONNX graph asks for, and how fast ONNX Runtime runs it.

:func:`count_macs` counts the multiply-accumulates of one inference from the graph alone;
:func:`bench_onnx` times several files in ONNX Runtime, interleaved so that the load of a shared
machine weighs on every model alike, and reports each one as ratios to the first file.

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
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tcompress.errors import BenchError

if TYPE_CHECKING:
    import onnx

#: The keys of :attr:`MacCount.by_kind`: convolutions with a 1x1 kernel, with a larger kernel,
#: depthwise convolutions (one input channel per group), and everything else that is counted
#: (``Gemm``, ``MatMul``, ``ConvTranspose``).
KINDS = ("conv1x1", "conv_kxk", "depthwise", "other")

_COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_EXPECTED = "expected an ONNX model file, such as one written by torch.onnx.export or onnx.save"
_IMAGE = "expected one image input, (N, C, H, W) or (N, H, W, C)"

#: The ONNX metadata entry naming the image input's layout, one of :data:`LAYOUTS`.
INPUT_LAYOUT_KEY = "tcompress.input_layout"
#: ONNX metadata entries with the network's own pixel normalisation, comma-separated per
#: channel: the input is ``(pixel - mean) / std``, pixels in [0, 1] (absent: tcompress's own).
PIXEL_MEAN_KEY = "tcompress.pixel_mean"
PIXEL_STD_KEY = "tcompress.pixel_std"
#: Image input layouts -> the axes of (channels, height, width).
LAYOUTS = {"NCHW": (1, 2, 3), "NHWC": (3, 1, 2)}


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
        use it.
    constant
        Multiply-accumulates of counted nodes whose inputs are all constants (for instance a
        weight rebuilt from factors): ONNX Runtime folds them once when it loads the model, so
        they are *not* part of ``total``.
    """

    total: int
    by_kind: dict[str, int]
    params: int
    constant: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BenchResult:
    """What :func:`bench_onnx` measured for one file. Ratios are to the first file.

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
        Parameters (initializer entries), each initializer counted once.
    params_ratio
        ``params`` of the first file / ``params`` of this one (``None`` if this one has none).
    macs
        Multiply-accumulates of one run at the measured input size and batch (:func:`count_macs`).
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
    """

    path: str
    input_shape: tuple[int, int, int, int]
    input_layout: str
    size_bytes: int
    size_ratio: float
    params: int
    params_ratio: float | None
    macs: int
    mac_bound: float | None
    median_ms: float
    min_ms: float
    speedup: float
    bound_fraction: float | None
    latencies_ms: list[float]

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
    ``MatMul`` (output elements) x (inner dimension). Other operators (activations, pooling,
    normalisation, resizing) are not counted. Only the top-level graph is counted.

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
        ``total``, ``by_kind`` (see :data:`KINDS`), ``params`` and ``constant``.

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
) -> list[BenchResult]:
    """Time ONNX files in ONNX Runtime on the CPU and compare each with the first.

    Every file gets its own ``InferenceSession`` (``CPUExecutionProvider``, ``threads`` intra-op
    threads, one inter-op thread, all graph optimisations, idle worker threads not spinning so
    that a session does not steal the cores from the next one). All models get the same seeded
    float input. After ``warmup`` untimed rounds, ``repeats`` rounds are timed, each running
    model 1, model 2, ... in turn, so that load drifts on a shared machine affect all alike.

    Parameters
    ----------
    paths
        ONNX files; the first is the reference of every ratio.
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

    Returns
    -------
    list of BenchResult
        One per file, in the order given.

    Raises
    ------
    BenchError
        A missing or non-ONNX file, models that take different numbers of input channels, a
        model whose fixed input shape does not fit the batch and size asked for, a model that
        ONNX Runtime cannot load or run, or a bad setting.
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

    models = []
    for path in paths:
        path = os.fspath(path)
        where = f"'{path}'"
        progress(f"Reading {os.path.basename(path)}")
        proto = _read_model(path)
        image = _image_input(proto.graph, where)
        layout = _layout(proto, image, where)
        channels = _channels(image, where, layout)
        if models and channels != models[0]["channels"]:
            first = models[0]["path"]
            raise BenchError(
                f"input channels differ: '{first}' takes {models[0]['channels']}, {where} takes "
                f"{channels}; expected every model to take the same input"
            )
        models.append(
            {
                "path": path,
                "where": where,
                "proto": proto,
                "image": image,
                "layout": layout,
                "input": image.name,
                "dtype": _input_dtype(image, where),
                "channels": channels,
                "size": _size_on_disk(proto, path),
            }
        )
    if input_size is None:
        height, width = _exported_size(models[0]["image"], models[0]["layout"])
    for m in models:
        progress(f"Counting the MACs of {os.path.basename(m['path'])}")
        _check_fits(m["image"], m["where"], batch, height, width, m["layout"])
        m["macs"] = _count(m.pop("proto"), m["where"], batch, height, width)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: the library does not write to the terminal
    # One image for all, handed to a channels-last file in its layout.
    image = np.random.default_rng(seed).standard_normal(
        (batch, models[0]["channels"], height, width), dtype=np.float32
    )
    by_layout = {"NCHW": image, "NHWC": np.ascontiguousarray(image.transpose(0, 2, 3, 1))}
    for m in models:
        progress(f"Loading {os.path.basename(m['path'])} in ONNX Runtime")
        try:
            m["session"] = ort.InferenceSession(
                m["path"], sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime's errors derive from Exception only
            raise BenchError(
                f"{m['where']} cannot be loaded by ONNX Runtime: {_first_line(e)}"
            ) from None
        m["feed"] = {m["input"]: by_layout[m["layout"]].astype(m["dtype"], copy=False)}
        m["latencies"] = []

    for r in range(warmup):
        progress(f"Warming up ({r + 1}/{warmup})")
        for m in models:
            _run(m)
    for r in range(repeats):
        progress(f"Timing round {r + 1}/{repeats}")
        for m in models:
            m["latencies"].append(_run(m))

    first = models[0]
    first_median = statistics.median(first["latencies"])
    results = []
    for m in models:
        median = statistics.median(m["latencies"])
        speedup = first_median / median
        mac_bound = _ratio(first["macs"].total, m["macs"].total)
        results.append(
            BenchResult(
                path=m["path"],
                input_shape=m["feed"][m["input"]].shape,
                input_layout=m["layout"],
                size_bytes=m["size"],
                size_ratio=first["size"] / m["size"],
                params=m["macs"].params,
                params_ratio=_ratio(first["macs"].params, m["macs"].params),
                macs=m["macs"].total,
                mac_bound=mac_bound,
                median_ms=median * 1e3,
                min_ms=min(m["latencies"]) * 1e3,
                speedup=speedup,
                bound_fraction=speedup / mac_bound if mac_bound else None,
                latencies_ms=[t * 1e3 for t in m["latencies"]],
            )
        )
    return results


# --- reading and checking -------------------------------------------------------------------


def _read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """The model in ``path``, without its external data; a clear error if it is not one."""
    import onnx
    from google.protobuf.message import Error as ProtobufError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise BenchError(f"ONNX file '{path}' does not exist")
    if os.path.isdir(path):
        raise BenchError(f"'{path}' is a directory; {_EXPECTED}")
    if os.path.getsize(path) == 0:
        raise BenchError(f"'{path}' is empty (0 bytes); {_EXPECTED}")
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
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in _dims(image)]
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    return input_layout(dims, metadata, where=where)


def _dims(image: onnx.ValueInfoProto):
    return image.type.tensor_type.shape.dim


def _channels(image: onnx.ValueInfoProto, where: str, layout: str) -> int:
    dim = _dims(image)[LAYOUTS[layout][0]]
    if not dim.HasField("dim_value"):
        raise BenchError(
            f"{where}: input '{image.name}' has a symbolic channel dim ({dim.dim_param or '?'}); "
            "expected a fixed number of channels"
        )
    return dim.dim_value


def _exported_size(image: onnx.ValueInfoProto, layout: str) -> tuple[int, int]:
    """The input's fixed height and width, or 256 x 256 where they are symbolic."""
    dims = _dims(image)
    spatial = (dims[k] for k in LAYOUTS[layout][1:])
    return tuple(d.dim_value if d.HasField("dim_value") else 256 for d in spatial)


def _check_fits(
    image: onnx.ValueInfoProto, where: str, batch: int, height: int, width: int, layout: str
):
    """A fixed batch or spatial dim of the input must equal the one asked for."""
    dims = _dims(image)
    _, h, w = LAYOUTS[layout]
    wanted = {0: batch, h: height, w: width}
    if all(not dims[k].HasField("dim_value") or dims[k].dim_value == v for k, v in wanted.items()):
        return
    shape = ", ".join(
        str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in dims
    )
    raise BenchError(
        f"{where} takes a fixed input shape ({shape}); batch {batch} at {height}x{width} does "
        "not fit it: expected the batch and input size it was exported for, or a model "
        "exported with dynamic axes"
    )


def _input_dtype(image: onnx.ValueInfoProto, where: str):
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


def _ratio(reference: int, value: int) -> float | None:
    return reference / value if value else None


def _run(m: dict) -> float:
    session, feed = m["session"], m["feed"]
    start = time.perf_counter()
    try:
        session.run(None, feed)
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise BenchError(f"{m['where']} fails to run in ONNX Runtime: {_first_line(e)}") from None
    return time.perf_counter() - start


# --- counting ---------------------------------------------------------------------------------


def _count(proto: onnx.ModelProto, where: str, batch: int, height: int, width: int) -> MacCount:
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    image = _image_input(graph, where)
    layout = _layout(model, image, where)
    _channels(image, where, layout)  # a fixed number of channels, or a clear error
    dims = _dims(image)
    _, h, w = LAYOUTS[layout]
    for k, value in ((0, batch), (h, height), (w, width)):
        dims[k].dim_value = value  # replaces a dim_param: the two are a oneof
    # Shapes stored at export time would clash with the new input size: infer them afresh.
    del graph.value_info[:]
    for out in graph.output:
        out.type.tensor_type.ClearField("shape")
    fed = "x".join(str(d.dim_value) for d in dims)
    inferred = _infer(model, f"{where} at input {fed}")

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

    constants = set(seen)
    by_kind = dict.fromkeys(KINDS, 0)
    folded = 0
    for node in graph.node:  # ONNX keeps nodes in topological order
        inputs = [name for name in node.input if name]
        constant = node.op_type == "Constant" or (
            bool(inputs) and all(name in constants for name in inputs)
        )
        if constant:
            constants.update(node.output)
        if node.op_type in _COUNTED and node.domain in ("", "ai.onnx"):
            macs, kind = _node_macs(node, shapes, where)
            if constant:
                folded += macs
            else:
                by_kind[kind] += macs
    return MacCount(total=sum(by_kind.values()), by_kind=by_kind, params=params, constant=folded)


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


def _node_macs(node: onnx.NodeProto, shapes: dict, where: str) -> tuple[int, str]:
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

    op = node.op_type
    if op == "Conv":
        weight = shape(node.input[1])  # (C_out, C_in / group, kh, kw)
        macs = math.prod(shape(node.output[0])) * math.prod(weight[1:])
        group = next((at.i for at in node.attribute if at.name == "group"), 1)
        if group > 1 and weight[1] == 1:
            return macs, "depthwise"
        return macs, "conv1x1" if all(k == 1 for k in weight[2:]) else "conv_kxk"
    if op == "ConvTranspose":
        weight = shape(node.input[1])  # (C_in, C_out / group, kh, kw)
        return math.prod(shape(node.input[0])) * math.prod(weight[1:]), "other"
    a = shape(node.input[0])
    if op == "Gemm":
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        inner = a[0] if trans_a else a[1]
    else:  # MatMul, numpy semantics
        inner = a[-1]
    return math.prod(shape(node.output[0])) * inner, "other"
