"""Half-precision ONNX files: a float32 file written by :func:`tcompress.export_onnx` converted to
float16, and its validation against PyTorch with a tolerance made for half precision.

The conversion is ONNX Runtime's own (``onnxruntime.transformers.float16``, which ships with
every onnxruntime wheel: no new dependency). It is the maintained descendant of
onnxconverter-common's ``float16`` module, which it credits: the same algorithm, plus opset-aware
handling of ``Resize``'s float inputs (its scales stay float32, as the operator requires), which
a hourglass's upsampling needs. Every float32 initializer becomes float16 (the file is about half
the size), every float tensor in the graph float16, and ``keep_io_types=True`` keeps the image
input and the heatmap outputs float32 with a ``Cast`` at each end. The source's metadata
(``tcompress.input_layout``, ``tcompress.pixel_mean``, ``tcompress.pixel_std``) is kept and
``tcompress.precision = fp16`` added.

The tolerance
-------------
float16 keeps 11 significant bits: each rounding is off by at most u = 2^-11 ~ 4.9e-4 of the
value. An exported hourglass rounds its input, every weight and (in half-precision arithmetic)
every activation, on a path of dozens of convolutions (the paper configuration's longest path
holds 87 in the dense form, 215 factorized); the errors add up roughly as a random walk, and
the largest of ~10^5 heatmap entries is a tail value. Measured with ONNX Runtime 1.32, float16
files from :func:`to_fp16` against PyTorch float32 on the validation inputs (seeded standard
normal, batches 1 and 3), as max |fp16 - fp32| / max |fp32|, worst output:

=================================================  ========  ===========  ==========  ========
model (random weights unless said)                 scale     weights      fp16        x1.1 one
                                                   max|out|  rounded      arithmetic  conv
=================================================  ========  ===========  ==========  ========
small hourglass (2 stacks, depth 2, f = 8), dense  0.81      8.5e-4       1.2e-3      6.3e-2
its Tucker T-Net 1,2,2,1,4,5,2,3, factorized       0.80      1.1e-3       1.5e-3      6.8e-2
bundled trained hourglass (2 stacks, f = 32)       0.17      3.1e-3       4.1e-3      1.0e-1
its T-Net 2,2,3,2,16,16,2,2, factorized            0.10      2.1e-3       3.5e-3      1.0e-1
paper configuration (4 stacks, f = 128), dense     8.9       8.1e-4       1.7e-3      1.0e-1
its T-Net 4,4,3,2,64,64,3,3, factorized            5.4       7.3e-4       1.6e-3      9.9e-2
=================================================  ========  ===========  ==========  ========

"weights rounded" is route ``"upcast"`` below (ONNX Runtime's CPU provider running the float16
file itself gives the same errors: it computes the same way). "fp16 arithmetic" is the folded
network run in PyTorch's float16 on the CPU (every activation stored in float16 between
operations): the stand-in for a float16 provider, which this machine has none of. "x1.1 one conv"
is the upcast route on a file whose middle convolution's weight was scaled by 1.1 (its first
convolution's: 8.5e-2 to 2.5e-1; one weight negated: 1.3 to 2.0).

An output therefore passes when max |fp16 - fp32| <= :data:`FP16_ATOL` + :data:`FP16_RTOL` *
max |fp32|, 1e-3 + 1e-2 * scale (rtol = 20 u). That is 3.9x the worst float16 error measured
(bundled hourglass: tolerance 1.6e-2 of its scale against 4.1e-3) and 5.6 to 9x on the others,
and a convolution off by 10 % fails it by 5x or more. Out of its reach: a small error in one weight
of a large layer (zeroing the largest of a 128x128x3x3 kernel's entries changes nothing visible)
and kernels that accumulate in float16; PCKh judges those (:mod:`tcompress.export.task`).

Where the file runs in half precision
-------------------------------------
:func:`fp16_providers` lists the execution providers here that run a float16 ``Conv`` with a
float16 kernel, found by creating a session on a one-node float16 Conv model (CUDA's has such
kernels; not tried here, where there is no GPU). ONNX Runtime 1.32's CPU provider on x86 does
**not**, even on CPUs with AVX512-FP16 /
AVX512-BF16 / AMX: it accepts the float16 file but wraps every ``Conv`` in ``Cast`` nodes to and
from float32 (its ``InsertCastTransformer``) and convolves in float32 (ONNX Runtime has no option
to turn that off). A CPU build with float16 Conv kernels would pass the same probe.

:func:`validate_fp16` takes route ``"native"`` on such a provider: the file itself, fed float16
(or float32 with ``keep_io_types``), against PyTorch float32. Where there is none, route
``"upcast"``: the file's graph with every float16 initializer and constant cast back to float32
(lossless: every float16 value is a float32 value) and every explicit float16 ``Cast`` kept as a
rounding, run on the CPU provider with the input and outputs rounded to float16 as the file's
are. That checks the file's weights, their rounding and its graph, not half-precision
arithmetic (accumulation, activation overflow past 65504). The report says which route ran.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tcompress.errors import BenchError, ExportError, param
from tcompress.export.bench import PRECISION_KEY, _first_line
from tcompress.export.validate import (
    FileReport,
    ValidationReport,
    check_model,
    check_names,
    check_output,
    check_tolerances,
    compare_output,
    float32_reference,
    output_path,
    read_source,
    reference_outputs,
    requested_size,
    session_options,
)

if TYPE_CHECKING:
    import numpy as np
    import onnx
    from torch import nn

log = logging.getLogger(__name__)

#: An output passes when max |fp16 - PyTorch fp32| <= FP16_ATOL + FP16_RTOL * max |PyTorch|
#: (derived in the module's docstring: 20 float16 roundings of the output's scale).
FP16_ATOL = 1e-3
FP16_RTOL = 1e-2
#: Validation routes: ``"auto"`` is ``"native"`` where :func:`fp16_providers` lists a provider,
#: else ``"upcast"``.
ROUTES = ("auto", "native", "upcast")
#: The largest finite float16 value; a weight beyond it cannot be stored.
FP16_MAX = 65504.0

_CPU = "CPUExecutionProvider"
_NATIVE_NOTE = "float16 kernels on {provider}: the file itself against PyTorch float32"
_UPCAST_NOTE = (
    "no execution provider here runs float16 Conv (ONNX Runtime's CPU provider casts it to "
    "float32): the file's graph with its float16 weights cast back to float32 (lossless), "
    "input and outputs rounded to float16 as the file's are, on the CPU provider; checks the "
    "weights' rounding and the graph, not half-precision arithmetic"
)


@dataclass
class Fp16Validation(ValidationReport):
    """A :class:`~tcompress.export.validate.ValidationReport` of a float16 file, with the route
    it was checked by.

    Attributes
    ----------
    route
        ``"native"`` (the file on a provider with float16 Conv kernels) or ``"upcast"`` (its
        weights cast back to float32 on the CPU provider; see the module's docstring).
    provider
        The execution provider the outputs came from.
    note
        One sentence saying what the route checks.
    """

    route: str = "not run"
    provider: str = ""
    note: str = ""

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "route": self.route,
            "provider": self.provider,
            "note": self.note,
        }


@dataclass
class Fp16Report(FileReport):
    """What :func:`to_fp16` wrote.

    Attributes
    ----------
    path, source
        The float16 file written and the float32 file it came from.
    keep_io_types
        Whether the image input and the outputs stayed float32.
    weights
        Initializer entries converted to float16.
    raised
        Nonzero weights smaller than float16's smallest subnormal (2^-24), which the converter
        keeps nonzero at +-2^-24 rather than flushing them to zero.
    file_bytes, source_bytes
        Sizes on disk of the float16 and the float32 file (their :attr:`size_ratio` is about
        0.5 once the weights outweigh the graph).
    validation
        The check against PyTorch when a reference model was given (:func:`validate_fp16`).
    notes
        Anything worth knowing about the conversion.
    """

    path: str
    source: str
    keep_io_types: bool
    weights: int
    raised: int
    file_bytes: int
    source_bytes: int
    validation: Fp16Validation | None = None
    notes: list[str] = field(default_factory=list)


# --- conversion -------------------------------------------------------------------------------


def to_fp16(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    keep_io_types: bool = False,
    reference: nn.Module | None = None,
    input_size: int | tuple[int, int] | None = None,
    atol: float = FP16_ATOL,
    rtol: float = FP16_RTOL,
    route: str = "auto",
) -> Fp16Report:
    """Convert a float32 ONNX file written by :func:`tcompress.export_onnx` to float16.

    Parameters
    ----------
    source
        The float32 file; never modified.
    output
        The float16 file: written atomically (replacing an existing file, never the source), and
        with ``reference`` only if it passes validation. It keeps the source's metadata and adds
        ``tcompress.precision = fp16``.
    keep_io_types
        Keep the image input and the heatmap outputs float32 (a ``Cast`` at each end of the
        graph) so that callers feed and read float32 arrays; by default they are float16.
    reference
        The PyTorch model the source was exported from: when given, the file is validated with
        :func:`validate_fp16` (``input_size``, ``atol``, ``rtol``, ``route`` are passed on) and a
        failure raises :class:`ExportError` and leaves no file. Without it, the file is checked
        with ``onnx.checker`` and loaded in ONNX Runtime.

    Returns
    -------
    Fp16Report

    Raises
    ------
    ExportError
        A missing, non-ONNX or not-float32 source, an output that is the source or has no
        folder, a weight beyond float16's range, or a failed check.
    """
    if not isinstance(keep_io_types, bool):
        raise ExportError(f"{param('keep_io_types')} is {keep_io_types!r}; expected True or False")
    source = os.fspath(source)
    proto = _read_float32(source)
    out_path = check_output("output", output_path("output", output), source, "another output path")
    converted, weights, raised = _convert(proto, keep_io_types, source)
    report = Fp16Report(
        path=os.fspath(output),
        source=source,
        keep_io_types=keep_io_types,
        weights=weights,
        raised=raised,
        file_bytes=0,
        source_bytes=os.path.getsize(source),
    )
    if raised:
        report.notes.append(
            f"{raised} nonzero weights below float16's smallest subnormal were kept at +-2^-24"
        )

    def write(tmp: str) -> None:
        import onnx

        onnx.save(converted, tmp)
        if reference is not None:
            report.validation = validate_fp16(
                tmp, reference, input_size=input_size, atol=atol, rtol=rtol, route=route
            )
            if not report.validation.ok:
                raise ExportError(
                    f"the float16 file made from '{source}' failed validation "
                    f"({report.validation.route} route): " + "; ".join(report.validation.problems)
                )
        else:
            _check_loads(tmp, source)

    from tcompress.checkpoint import atomic_write

    atomic_write(out_path, write)
    report.file_bytes = os.path.getsize(out_path)
    log.info("wrote float16 %s from %s (%.2fx its size)", out_path, source, report.size_ratio)
    return report


def _convert(proto: onnx.ModelProto, keep_io_types: bool, source: str):
    """The float16 model, the number of weight entries converted, and of tiny ones raised."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    weights = raised = 0
    largest = 0.0
    tiny = np.float32(2.0**-24)
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        weights += values.size
        if values.size:
            magnitude = np.abs(values[np.isfinite(values)])
            if magnitude.size:
                largest = max(largest, float(magnitude.max()))
            raised += int(np.count_nonzero((magnitude > 0) & (magnitude < tiny)))
    if largest > FP16_MAX:
        raise ExportError(
            f"'{source}' holds a weight of magnitude {largest:.6g}, beyond float16's largest "
            f"value {FP16_MAX:g}; this network cannot be stored in float16"
        )
    metadata = [(e.key, e.value) for e in proto.metadata_props]
    known = {v.name for v in proto.graph.value_info}
    try:
        with _quiet():
            convert_float_to_float16 = _converter()
            converted = convert_float_to_float16(proto, keep_io_types=keep_io_types)
    except ExportError:
        raise
    except Exception as e:  # the converter and shape inference raise assorted types
        raise ExportError(f"converting '{source}' to float16 failed: {_first_line(e)}") from None
    # The converter appends the Casts it adds for float-only inputs (Resize's scales) at the end
    # of the node list, which onnx.checker refuses: put the nodes back in topological order.
    _sort_nodes(converted.graph)
    # The converter's shape inference leaves value_info for every intermediate tensor; ONNX
    # Runtime infers them again, so only the source's own are kept (the file stays lean).
    kept = [v for v in converted.graph.value_info if v.name in known]
    del converted.graph.value_info[:]
    converted.graph.value_info.extend(kept)
    entries = dict(metadata)
    entries.update({e.key: e.value for e in converted.metadata_props if e.key not in entries})
    entries[PRECISION_KEY] = "fp16"
    del converted.metadata_props[:]
    for key, value in entries.items():
        entry = converted.metadata_props.add()
        entry.key, entry.value = key, value
    return converted, weights, raised


def _sort_nodes(graph) -> None:
    """Reorder ``graph.node`` topologically, keeping the given order wherever it is valid."""
    import heapq

    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    needs = [
        {producer[x] for x in n.input if x in producer and producer[x] != i}
        for i, n in enumerate(nodes)
    ]
    users: dict[int, list[int]] = {}
    for i, deps in enumerate(needs):
        for j in deps:
            users.setdefault(j, []).append(i)
    waiting = [len(deps) for deps in needs]
    ready = [i for i, w in enumerate(waiting) if not w]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in users.get(i, ()):
            waiting[k] -= 1
            if not waiting[k]:
                heapq.heappush(ready, k)
    if len(order) != len(nodes):
        raise ExportError("the float16 graph has a cycle; expected an acyclic ONNX graph")
    if order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


def _check_loads(path: str, source: str) -> None:
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(path, full_check=True)
        ort.InferenceSession(path, session_options(), providers=[_CPU])
    except Exception as e:
        raise ExportError(
            f"the float16 file made from '{source}' does not load: {_first_line(e)}"
        ) from None


# --- providers --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def fp16_providers() -> tuple[str, ...]:
    """The execution providers available here that run a float16 ``Conv`` with float16 kernels.

    Each available provider is tried on a one-node float16 Conv model (a session created and
    run, its output checked). A non-CPU provider counts when the session builds with ONNX
    Runtime's CPU fallback disabled (the Conv is its own); the CPU provider counts when ONNX
    Runtime did not wrap the Conv in ``Cast`` nodes to float32 (what it does where it has no
    float16 Conv kernel, as on x86). Computed once per process.
    """
    import onnxruntime as ort

    return tuple(p for p in ort.get_available_providers() if _runs_fp16_conv(p))


def _probe_model() -> tuple[bytes, np.ndarray, np.ndarray]:
    """A float16 Conv (1x3x8x8 input, 4 output channels, 3x3) and an input and its float32
    result."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float16)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float16)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "fp16_conv_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 4, 8, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    padded = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))
    want = np.einsum("nchwij,ocij->nohw", windows, w.astype(np.float32))
    return model.SerializeToString(), x, want


def _runs_fp16_conv(provider: str) -> bool:
    import numpy as np
    import onnx
    import onnxruntime as ort

    data, x, want = _probe_model()
    with tempfile.TemporaryDirectory(prefix="tcompress-fp16-probe-") as work:
        # Fatal messages only: a provider refusing the model is an answer, not an error.
        options = session_options(severity=4)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        optimized = os.path.join(work, "optimized.onnx")
        if provider == _CPU:
            # The graph as ONNX Runtime runs it, with any Cast it inserted.
            options.optimized_model_filepath = optimized
        else:
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        try:
            session = ort.InferenceSession(data, options, providers=[provider])
            (got,) = session.run(None, {"x": x})
        except Exception:  # a provider that cannot take the model, for any reason
            return False
        if got.dtype != np.float16 or not np.allclose(got, want, rtol=1e-2, atol=1e-2):
            return False
        if provider == _CPU:
            try:
                ran = onnx.load(optimized)
            except Exception:
                return False
            if any(n.op_type == "Cast" for n in ran.graph.node):
                return False
    return True


# --- validation -------------------------------------------------------------------------------


def validate_fp16(
    path: str | os.PathLike,
    reference: nn.Module,
    *,
    input_size: int | tuple[int, int] | None = None,
    atol: float = FP16_ATOL,
    rtol: float = FP16_RTOL,
    batches: Sequence[int] | None = None,
    route: str = "auto",
    input_name: str = "image",
    output_names: Sequence[str] | None = None,
    seed: int = 0,
) -> Fp16Validation:
    """Check a float16 file and compare its outputs with ``reference``'s (PyTorch, float32, eval
    mode, CPU) on seeded standard-normal inputs, as
    :func:`~tcompress.export.validate.validate_onnx` does for float32 files.

    Parameters
    ----------
    path
        A float16 file (:func:`to_fp16`), float16 or float32 inputs and outputs.
    reference
        The PyTorch model the float32 source was exported from.
    input_size
        Height and width of the inputs; by default the file's own (export_onnx fixes them).
    atol, rtol
        An output passes when max |file - PyTorch| <= atol + rtol * max |PyTorch|.
    batches
        Batch sizes tried; by default 1 and 3 (or the file's fixed batch).
    route
        ``"native"``: on the first of :func:`fp16_providers` (an error where there is none);
        ``"upcast"``: the weights cast back to float32 on the CPU provider; ``"auto"``
        (default): native where possible, else upcast. See the module's docstring.
    input_name, output_names
        The names the graph must have (outputs: by default the model's own, as export_onnx
        names them).
    seed
        Seed of the inputs.

    Returns
    -------
    Fp16Validation
        ``ok``, ``problems``, one :class:`~tcompress.export.validate.OutputCheck` per output and
        batch, and the ``route`` and ``provider`` used.

    Raises
    ------
    ExportError
        An unknown route, route ``"native"`` with no provider for it, a file whose input size
        cannot be told, or a bad tolerance. A file that fails a check is not an error: its
        report has ``ok`` False.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    from tcompress.export.validate import output_names as names_of
    from tcompress.models.io import model_io

    if route not in ROUTES:
        raise ExportError(f"{param('route')} is {route!r}; expected one of {', '.join(ROUTES)}")
    check_tolerances(atol, rtol)
    path = os.fspath(path)
    providers = fp16_providers() if route != "upcast" else ()
    if route == "native" and not providers:
        raise ExportError(
            f"no execution provider here runs float16 Conv (available: "
            f"{', '.join(ort.get_available_providers())}; the CPU provider casts it to float32); "
            f"pass {param('route', 'upcast')} or run on a CUDA machine"
        )
    native = bool(providers)
    report = Fp16Validation(
        route="native" if native else "upcast",
        provider=providers[0] if native else _CPU,
        note=_NATIVE_NOTE.format(provider=providers[0]) if native else _UPCAST_NOTE,
    )
    if not check_model(report, path, _first_line):
        return report
    proto = onnx.load(path)
    image = _input_of(proto, input_name)
    size, batch_dim = _input_size(proto, image, input_size, path)
    if batches is None:
        batches = (1, 3) if batch_dim is None else (batch_dim,)
    with tempfile.TemporaryDirectory(prefix="tcompress-fp16-") as work:
        if native:
            run_path, run_providers = path, list(dict.fromkeys([providers[0], _CPU]))
        else:
            run_path, run_providers = os.path.join(work, "upcast.onnx"), [_CPU]
            onnx.save(upcast(proto), run_path)
        try:
            session = ort.InferenceSession(run_path, session_options(), providers=run_providers)
        except Exception as e:
            report.problems.append(f"ONNX Runtime cannot load it: {_first_line(e)}")
            return report
        # The file's own input and output types (the upcast graph's are float32 throughout).
        elem = {
            v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]
        }
        model = float32_reference(reference)
        io = model_io(model)
        if output_names is None:
            output_names = names_of(model, io.example(1, size))
        expected = list(output_names)
        if not check_names(report, session, input_name, expected):
            return report
        half_in = elem.get(input_name) == onnx.TensorProto.FLOAT16
        feed_dtype = np.float16 if half_in and native else np.float32
        for batch, x, want in reference_outputs(model, io, batches, size, seed):
            feed = x.numpy()
            if half_in:
                # What a caller of the file does: the image rounded to float16.
                feed = feed.astype(np.float16)
            try:
                got = session.run(None, {input_name: feed.astype(feed_dtype)})
            except Exception as e:
                report.problems.append(f"batch {batch}: ONNX Runtime failed: {_first_line(e)}")
                continue
            for name, g, w in zip(expected, got, want):
                if not native and elem.get(name) == onnx.TensorProto.FLOAT16:
                    g = g.astype(np.float16)  # the file hands its outputs over in float16
                # The difference in float64, a NaN or overflow in the file's outputs failing.
                g = g.astype(np.float64)
                report.record(
                    compare_output(batch, name, g, w, atol=atol, rtol=rtol, nonfinite="inf")
                )
    return report


def upcast(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a float16 model computing in float32 on the same values: every float16
    initializer and constant cast to float32 (exactly), every float16 input, output and
    intermediate declared float32, and every ``Cast`` to float16 kept as a rounding (a Cast to
    float16 followed by one back to float32). What route ``"upcast"`` of :func:`validate_fp16`
    runs."""
    import onnx
    from onnx import TensorProto

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    _upcast_graph(model.graph, TensorProto)
    return model


def _upcast_graph(graph, TensorProto) -> None:
    from onnx import helper, numpy_helper

    half, single = TensorProto.FLOAT16, TensorProto.FLOAT

    def tensor(t):
        if t.data_type == half:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype("float32"), t.name))

    for init in graph.initializer:
        tensor(init)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == half:
            value.type.tensor_type.elem_type = single
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == _attr("TENSOR"):
                tensor(attr.t)
            elif attr.type == _attr("TENSORS"):
                for t in attr.tensors:
                    tensor(t)
            elif attr.type == _attr("GRAPH"):
                _upcast_graph(attr.g, TensorProto)
            elif attr.type == _attr("GRAPHS"):
                for g in attr.graphs:
                    _upcast_graph(g, TensorProto)
            elif attr.name in ("to", "dtype") and attr.type == _attr("INT") and attr.i == half:
                attr.i = single
                if node.op_type == "Cast":
                    # Keep the rounding the file makes here: to float16, then back.
                    rounded = f"{node.output[0]}__fp16"
                    nodes.append(
                        helper.make_node(
                            "Cast", [node.input[0]], [rounded], to=half, name=f"{node.name}__fp16"
                        )
                    )
                    node.input[0] = rounded
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _attr(name: str) -> int:
    from onnx import AttributeProto

    return getattr(AttributeProto, name)


# --- helpers ----------------------------------------------------------------------------------


def _read_float32(path: str) -> onnx.ModelProto:
    from onnx import TensorProto

    proto = read_source(path, single_file=True)
    kinds = {t.data_type for t in proto.graph.initializer}
    kinds |= {v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    if TensorProto.FLOAT16 in kinds:
        raise ExportError(
            f"'{path}' is already float16; expected a float32 file written by export_onnx"
        )
    if TensorProto.FLOAT not in kinds:
        raise ExportError(
            f"'{path}' holds no float32 weights or inputs; expected a float32 file written by "
            "export_onnx"
        )
    return proto


def _input_of(proto: onnx.ModelProto, name: str):
    for value in proto.graph.input:
        if value.name == name:
            return value
    weights = {t.name for t in proto.graph.initializer}
    return next((v for v in proto.graph.input if v.name not in weights), None)


def _input_size(proto, image, input_size, path: str) -> tuple[tuple[int, int], int | None]:
    """The (height, width) to validate at, and the file's fixed batch (None: dynamic)."""
    from tcompress.export.bench import LAYOUTS, _layout

    if image is None or len(image.type.tensor_type.shape.dim) != 4:
        raise ExportError(
            f"'{path}' has no 4-d image input; expected a file written by export_onnx"
        )
    dims = list(image.type.tensor_type.shape.dim)
    batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
    if input_size is not None:
        return requested_size(input_size), batch
    try:
        layout = _layout(proto, image, f"'{path}'")
    except BenchError as e:
        raise ExportError(str(e)) from None
    spatial = [dims[k] for k in LAYOUTS[layout][1:]]
    if all(d.HasField("dim_value") for d in spatial):
        return (spatial[0].dim_value, spatial[1].dim_value), batch
    raise ExportError(
        f"'{path}' does not fix its input's height and width; pass {param('input_size')}"
    )


def _converter():
    """ONNX Runtime's ``convert_float_to_float16``. Importing ``onnxruntime.transformers``
    appends its own folder to ``sys.path``, and is left to: its modules import each other
    through it (the quantization tools' pre-processing among them), once per process."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16


class _quiet:
    """The converter logs through its own module logger; keep its warnings out of the caller's
    log while it runs (errors still raise)."""

    def __enter__(self):
        self.logger = logging.getLogger("onnxruntime.transformers.float16")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False
