"""Validating an ONNX file against the PyTorch model it came from, with ONNX Runtime.

Unlike exporters that log a tolerance miss as a warning, every problem here is collected and the
export fails: the structural check (``onnx.checker``), the input and output names, and, at every
batch size tried, each output's shape and its maximal absolute and relative difference.

The other export checks (:func:`tcompress.export.fp16.validate_fp16`,
:func:`tcompress.export.mobile.compare_ort` and the INT8 output error of
:func:`tcompress.export.quantize.quantize_int8`) compare their outputs with
:func:`compare_output`, and the converters share this module's readers of their source and
checks of their settings, so that every file is judged and refused alike. Torch is imported on
first use: the converters import this module without it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcompress.errors import BenchError, ExportError, param
from tcompress.vocabulary import FP32_ATOL, FP32_RTOL

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch
    from torch import nn

    from tcompress.models.io import ModelIO


@dataclass
class OutputCheck:
    """One output at one batch size: ONNX Runtime against PyTorch in eval mode."""

    batch: int
    name: str
    shape: list[int]
    expected_shape: list[int]
    max_abs_diff: float
    max_rel_diff: float  # max |diff| / max |PyTorch output|
    tolerance: float  # atol + rtol * max |PyTorch output|
    passed: bool


@dataclass
class ValidationReport:
    checker: str = "not run"
    names: str = "not run"
    outputs: list[OutputCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.outputs), default=float("nan"))

    def record(self, check: OutputCheck) -> None:
        """Keep one output's check, and a problem line when its shape or its difference fails."""
        self.outputs.append(check)
        if check.shape != check.expected_shape:
            self.problems.append(
                f"batch {check.batch}, {check.name}: shape {check.shape}; "
                f"expected {check.expected_shape}"
            )
        elif not check.passed:
            self.problems.append(
                f"batch {check.batch}, {check.name}: max abs diff {check.max_abs_diff:.3g} > "
                f"tolerance {check.tolerance:.3g}"
            )

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checker": self.checker,
            "names": self.names,
            "outputs": [asdict(c) for c in self.outputs],
            "problems": list(self.problems),
        }


class FileReport:
    """What the reports of a converted file (float16, ORT format, INT8) share: the file's size
    against its source's, and ``to_dict`` with the validation, where the report has one, as its
    own ``to_dict``."""

    file_bytes: int
    source_bytes: int

    @property
    def size_ratio(self) -> float:
        """``file_bytes / source_bytes``: the file's size as a fraction of its source's."""
        return self.file_bytes / self.source_bytes

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "validation"}
        if hasattr(self, "validation"):
            out["validation"] = self.validation.to_dict() if self.validation else None
        out["size_ratio"] = self.size_ratio
        return out


def compare_output(
    batch: int,
    name: str,
    got: np.ndarray,
    want: np.ndarray,
    *,
    atol: float,
    rtol: float,
    nonfinite: str = "keep",
) -> OutputCheck:
    """One output against its reference: max |got - want| (in the arrays' own precision: the
    caller casts them), that over max |want|, and the tolerance ``atol + rtol * max |want|``.
    Arrays of different shapes, or empty ones, differ by infinity.

    ``nonfinite`` is what a NaN or infinite difference counts as: ``"keep"`` (as computed; NaN
    fails any tolerance), ``"inf"``, or ``"equal"`` (0 where the arrays hold the same values, NaN
    for NaN, else infinity: two runs of the same kernels).
    """
    import numpy as np

    scale = float(np.abs(want).max()) if want.size else 0.0
    same_shape = list(got.shape) == list(want.shape)
    diff = float(np.abs(got - want).max()) if same_shape and want.size else float("inf")
    if not np.isfinite(diff) and nonfinite != "keep":
        same = nonfinite == "equal" and np.array_equal(got, want, equal_nan=True)
        diff = 0.0 if same else float("inf")
    tolerance = atol + rtol * scale
    return OutputCheck(
        batch=batch,
        name=name,
        shape=list(got.shape),
        expected_shape=list(want.shape),
        max_abs_diff=diff,
        max_rel_diff=diff / scale if scale else diff,
        tolerance=tolerance,
        passed=same_shape and diff <= tolerance,
    )


def validate_onnx(
    path: str,
    reference: nn.Module,
    *,
    input_size: tuple[int, int],
    atol: float = FP32_ATOL,
    rtol: float = FP32_RTOL,
    batches: Sequence[int] = (1, 3),
    input_name: str = "image",
    output_names: Sequence[str] | None = None,
    seed: int = 0,
) -> ValidationReport:
    """Check ``path`` and compare ONNX Runtime's outputs with ``reference``'s on seeded inputs.

    The inputs are standard normal (unit scale), one per batch size in ``batches``, in the
    network's own layout (:class:`~tcompress.models.ModelIO`); the reference runs in eval mode in
    float32 on the CPU.
    """
    import onnxruntime as ort

    from tcompress.models.io import model_io

    report = ValidationReport()
    if not check_model(report, path, _leading_line):
        return report
    try:
        session = ort.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])
    except Exception as e:
        report.problems.append(f"ONNX Runtime cannot load it: {_leading_line(e)}")
        return report
    model = float32_reference(reference)
    io = model_io(model)
    expected = list(output_names or io.output_names)
    if not check_names(report, session, input_name, expected):
        return report
    exact = None  # the float64 copy, made only once an output misses the plain tolerance
    for batch, x, want in reference_outputs(model, io, batches, input_size, seed):
        try:
            got = session.run(None, {input_name: x.numpy()})
        except Exception as e:
            report.problems.append(f"batch {batch}: ONNX Runtime failed: {str(e).splitlines()[0]}")
            continue
        checks = [
            compare_output(batch, n, g, w, atol=atol, rtol=rtol)
            for n, g, w in zip(expected, got, want)
        ]
        if not all(c.passed for c in checks):
            if exact is None:
                exact = copy.deepcopy(model).double()
            # Two float32 computations of the same network differ by about its own rounding.
            checks = [
                compare_output(batch, n, g, w, atol=atol + NOISE_FACTOR * noise, rtol=rtol)
                for n, g, w, noise in zip(expected, got, want, rounding_noise(exact, x, want))
            ]
        for check in checks:
            report.record(check)
    return report


#: How many times the reference's own float32 rounding (its largest difference from the same
#: network in float64) the tolerance adds: ONNX Runtime's kernels round differently, not less.
#: Measured only for a batch whose outputs miss the plain tolerance (a float64 pass costs).
NOISE_FACTOR = 2.0


def rounding_noise(exact: nn.Module, x: torch.Tensor, want: Sequence[np.ndarray]) -> list[float]:
    """Per output: max |float32 output - float64 output| of the network (``exact``, its float64
    copy), the rounding the float32 reference itself carries. A network whose inner activations
    are much larger than its outputs (a BatchNorm re-estimated on a heavily truncated T-Net)
    rounds far above ``rtol * max |output|``."""
    import numpy as np
    import torch

    with torch.no_grad():
        out = exact(x.double())
    out = out if isinstance(out, list | tuple) else [out]
    return [
        float(np.abs(w.astype(np.float64) - o.numpy()).max()) if w.size else 0.0
        for w, o in zip(want, out)
    ]


def output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The graph's output names: the network's own (:class:`~tcompress.models.ModelIO`), or for a
    network without them, ``output`` or ``output_<i>`` after the outputs of one run."""
    import torch

    from tcompress.models.io import model_io

    io = model_io(model)
    if io.output_names != ("output",):
        return list(io.output_names)
    with torch.no_grad():
        out = model(example)
    if isinstance(out, list | tuple):
        return [f"output_{i}" for i in range(len(out))]
    return ["output"]


# --- the steps the checks share ---------------------------------------------------------------


def check_model(
    report: ValidationReport, path: str, reason: Callable[[BaseException], str]
) -> bool:
    """Run ``onnx.checker``'s full check on ``path``; ``report.checker`` says how it went and a
    failure adds a problem (the exception as ``reason`` puts it in one line). True if it passed."""
    import onnx

    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:  # the checker raises several exception types
        report.checker = "failed"
        report.problems.append(f"onnx.checker: {reason(e)}")
        return False
    report.checker = "passed"
    return True


def check_names(
    report: ValidationReport, session: Any, input_name: str, expected: Sequence[str]
) -> bool:
    """Whether the session's inputs are ``[input_name]`` and its outputs ``expected``;
    ``report.names`` says so and a mismatch adds a problem."""
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [input_name] or outputs != expected:
        report.names = "failed"
        report.problems.append(
            f"names: inputs {inputs} and outputs {outputs}; "
            f"expected [{input_name!r}] and {expected}"
        )
        return False
    report.names = "passed"
    return True


def float32_reference(reference: nn.Module) -> nn.Module:
    """``reference`` in eval mode, in float32 on the CPU: the model itself where it already is,
    else a copy, so that the caller's model is not moved."""
    import torch

    model = reference.eval()
    if any(
        t.device.type != "cpu" or t.dtype != torch.float32
        for t in model.state_dict().values()
        if t.is_floating_point()
    ):
        model = copy.deepcopy(model).float().cpu()
    return model


def reference_outputs(
    model: nn.Module, io: ModelIO, batches: Sequence[int], size: tuple[int, int], seed: int
) -> Iterator[tuple[int, torch.Tensor, list[np.ndarray]]]:
    """Per batch size: the batch, a seeded standard-normal input in the network's layout, and
    the model's outputs on it as numpy arrays (one generator for every batch, as the checks
    always drew them)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        x = io.example(batch, size, generator)
        with torch.no_grad():
            out = model(x)
        yield batch, x, [w.numpy() for w in (out if isinstance(out, list | tuple) else [out])]


def session_options(severity: int = 3):
    """ONNX Runtime session options that log at ``severity`` and above (3: errors only: the
    library does not write to the terminal)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = severity
    return options


def check_tolerances(atol: Any, rtol: Any) -> None:
    """An :class:`ExportError` unless ``atol`` and ``rtol`` are numbers >= 0."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ExportError(f"{param(name)} is {value!r}; expected a number >= 0")


def requested_size(input_size: Any) -> tuple[int, int]:
    """The (height, width) an ``input_size`` argument asks for: an int or a pair of them > 0."""
    if isinstance(input_size, int) and not isinstance(input_size, bool) and input_size > 0:
        return input_size, input_size
    if (
        isinstance(input_size, tuple | list)
        and len(input_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)
    ):
        return input_size[0], input_size[1]
    raise ExportError(
        f"{param('input_size')} is {input_size!r}; expected an int or (height, width)"
    )


# --- the converters' source and output --------------------------------------------------------


def read_source(path: str, *, single_file: bool = False) -> onnx.ModelProto:
    """The ONNX file a converter starts from, without its external data
    (:func:`tcompress.export.bench._read_model`, its errors as :class:`ExportError`); with
    ``single_file``, a file keeping its weights in external data files is refused."""
    from onnx import TensorProto

    from tcompress.export.bench import _read_model

    try:
        proto = _read_model(path)
    except BenchError as e:
        raise ExportError(str(e)) from None
    if single_file and any(
        t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer
    ):
        raise ExportError(
            f"'{path}' keeps its weights in external data files; expected a single-file ONNX "
            "model as export_onnx writes"
        )
    return proto


def output_path(name: str, value: Any) -> Path:
    """The path argument ``name`` as a :class:`~pathlib.Path` (``~`` expanded); an
    :class:`ExportError` unless it is a non-empty path."""
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ExportError(f"{param(name)} is {value!r}; expected a file path")
    return Path(value).expanduser()


def check_output(name: str, path: Path, source: str, another: str = "another path") -> Path:
    """``path``, once it is known to be writable without harm: its folder exists, it is no
    folder and not the ``source`` (the message then asks for ``another``)."""
    if not path.parent.resolve().is_dir():
        raise ExportError(f"{name} directory '{path.parent}' does not exist; create it first")
    if path.is_dir():
        raise ExportError(f"{name} '{path}' is a directory; expected a file path")
    if path.exists() and os.path.samefile(path, source):
        raise ExportError(f"{name} '{path}' is the source file; choose {another}")
    return path


def _leading_line(e: BaseException) -> str:
    """The first line of an exception's stripped message: :func:`validate_onnx`'s spelling (the
    converters' ``_first_line`` also strips the line and names an exception with no message)."""
    return str(e).strip().splitlines()[0]
