"""Validating an ONNX file against the PyTorch model it came from, with ONNX Runtime.

Unlike exporters that log a tolerance miss as a warning, every problem here is collected and the
export fails: the structural check (``onnx.checker``), the input and output names, and, at every
batch size tried, each output's shape and its maximal absolute and relative difference.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tcompress.models.io import model_io
from tcompress.vocabulary import FP32_ATOL, FP32_RTOL


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

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checker": self.checker,
            "names": self.names,
            "outputs": [asdict(c) for c in self.outputs],
            "problems": list(self.problems),
        }


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
    import onnx
    import onnxruntime as ort

    report = ValidationReport()
    try:
        onnx.checker.check_model(path, full_check=True)
        report.checker = "passed"
    except Exception as e:  # the checker raises several exception types
        report.checker = "failed"
        report.problems.append(f"onnx.checker: {str(e).strip().splitlines()[0]}")
        return report
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        report.problems.append(f"ONNX Runtime cannot load it: {str(e).strip().splitlines()[0]}")
        return report
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    model = reference.eval()
    if any(
        t.device.type != "cpu" or t.dtype != torch.float32
        for t in model.state_dict().values()
        if t.is_floating_point()
    ):
        # Compare in float32 on the CPU without moving the caller's model.
        model = copy.deepcopy(model).float().cpu()
    io = model_io(model)
    expected = list(output_names or io.output_names)
    if inputs != [input_name] or outputs != expected:
        report.names = "failed"
        report.problems.append(
            f"names: inputs {inputs} and outputs {outputs}; "
            f"expected [{input_name!r}] and {expected}"
        )
        return report
    report.names = "passed"
    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        x = io.example(batch, input_size, generator)
        with torch.no_grad():
            out = model(x)
        want = [w.numpy() for w in (out if isinstance(out, list | tuple) else [out])]
        try:
            got = session.run(None, {input_name: x.numpy()})
        except Exception as e:
            report.problems.append(f"batch {batch}: ONNX Runtime failed: {str(e).splitlines()[0]}")
            continue
        for name, g, w in zip(expected, got, want):
            scale = float(abs(w).max()) if w.size else 0.0
            same_shape = list(g.shape) == list(w.shape)
            diff = float(abs(g - w).max()) if same_shape and w.size else float("inf")
            tolerance = atol + rtol * scale
            check = OutputCheck(
                batch=batch,
                name=name,
                shape=list(g.shape),
                expected_shape=list(w.shape),
                max_abs_diff=diff,
                max_rel_diff=diff / scale if scale else diff,
                tolerance=tolerance,
                passed=same_shape and diff <= tolerance,
            )
            report.outputs.append(check)
            if not same_shape:
                report.problems.append(
                    f"batch {batch}, {name}: shape {list(g.shape)}; expected {list(w.shape)}"
                )
            elif not check.passed:
                report.problems.append(
                    f"batch {batch}, {name}: max abs diff {diff:.3g} > tolerance {tolerance:.3g}"
                )
    return report


def output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The graph's output names: the network's own (:class:`~tcompress.models.ModelIO`), or for a
    network without them, ``output`` or ``output_<i>`` after the outputs of one run."""
    io = model_io(model)
    if io.output_names != ("output",):
        return list(io.output_names)
    with torch.no_grad():
        out = model(example)
    if isinstance(out, list | tuple):
        return [f"output_{i}" for i in range(len(out))]
    return ["output"]
