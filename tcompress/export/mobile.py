"""ONNX Runtime's mobile format: an ONNX file converted to an ``.ort`` file, and what ONNX Runtime's
mobile usability checker says of it.

:func:`to_ort` runs the converter ONNX Runtime ships, ``python -m
onnxruntime.tools.convert_onnx_models_to_ort``, in a subprocess: the command line is the
interface ONNX Runtime documents for it, and the subprocess keeps the tool's prints, its log
handlers and anything that could crash out of the caller's process (about 0.7 s for a small
model: the child is started with torch hidden, which the tool's package imports for nothing the
converter uses). The tool writes ``<name>.ort`` and an operators config
(``<name>.required_operators_and_types.config``, the input of a reduced ONNX Runtime build's
``--include_ops_by_config``) beside the model it is given; here it is given a link to the source
inside a private folder next to the output, so nothing is written beside the source, and the
``.ort`` (and the config, only where asked for) are renamed into place. Then the ``.ort`` is
loaded in ONNX Runtime and its outputs compared with the source's on seeded inputs.

The ``.ort`` is the graph as ONNX Runtime optimised it on the machine that converted it
("fixed" style: every optimisation applied, ONNX Runtime's x86-only NCHWc layout left out unless
``target_platform="amd64"``), so it runs the same kernels as its source on the CPU provider
optimised alike: the outputs agree exactly (max |ort - onnx| = 0 on the small test hourglass and
its T-Net, the bundled hourglass and its T-Net and the paper configuration and its T-Net, float32
and float16), and within 1.6e-6 of their scale of ONNX Runtime's x86 default, which adds NCHWc.

Sizes (measured, fixed style): the ``.ort`` is not smaller than the ``.onnx``. The ORT format
spends about 0.4 kB per node (1.00x for the paper configuration, 63.5 MB; 1.04x for the bundled
hourglass; 1.5x for the tiny test hourglass), and ONNX Runtime's fusions fold a T-Net's
per-channel scales (``Mul``) into per-layer copies of its shared kernels (1.16x for the paper
T-Net 4,4,3,2,64,64,3,3, 21.3 -> 24.6 MB; 1.3x for the bundled T-Net).

A float16 source is refused by default: ONNX Runtime's CPU provider on x86 has no float16 Conv, so
the converter wraps every convolution in Casts and folds float32 copies of the weights into the
``.ort`` (it came out larger than the float32 file's ``.ort``). Convert the float32 file, or a
float16 one on a build whose CPU provider runs float16 Conv (``allow_float32_fallback=True``
keeps such a file anyway).

:func:`mobile_usability` returns the verdicts of ONNX Runtime's
``check_onnx_model_mobile_usability`` (whether the NNAPI and CoreML providers may run the model
well) as data.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcompress.errors import BenchError, ExportError, param
from tcompress.export.bench import _first_line
from tcompress.export.validate import (
    FileReport,
    ValidationReport,
    check_output,
    check_tolerances,
    compare_output,
    output_path,
    read_source,
    requested_size,
    session_options,
)

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

#: ``optimization_style=``: "fixed" (optimisations applied before saving: for the CPU provider)
#: or "runtime" (some saved to be replayed at load time: for NNAPI / CoreML, which take an
#: unknown share of the nodes).
OPTIMIZATION_STYLES = ("fixed", "runtime")
#: ``target_platform=``: None, "arm" or "amd64" (the tool's choices).
TARGET_PLATFORMS = (None, "arm", "amd64")
#: An output of the ``.ort`` passes when max |ort - onnx| <= ORT_ATOL + ORT_RTOL * max |onnx|.
ORT_ATOL = 1e-6
ORT_RTOL = 1e-6
#: The suffix ONNX Runtime recognises an ORT-format file by when it loads a path.
SUFFIX = ".ort"

_TOOL = "onnxruntime.tools.convert_onnx_models_to_ort"
#: What ``python -m onnxruntime.tools.check_onnx_model_mobile_usability`` runs.
_CHECKER = "onnxruntime.tools.mobile_helpers.usability_checker"
_CPU = "CPUExecutionProvider"


@dataclass
class OrtReport(FileReport):
    """What :func:`to_ort` wrote.

    Attributes
    ----------
    path, source
        The ``.ort`` file written and the ONNX file it came from.
    optimization_style, target_platform
        The converter's settings.
    operators
        The operators the file needs, as the converter's config lists them
        (``"ai.onnx;11;Conv"``: domain, opset, operator).
    types
        Element types per operator where the config lists them (``{"ai.onnx:Conv": ["float"]}``).
    config_path
        Where the operators config was written (None: not kept).
    file_bytes, source_bytes
        Sizes on disk of the ``.ort`` and the ONNX file.
    validation
        The ``.ort`` against its source in ONNX Runtime, a
        :class:`~tcompress.export.validate.ValidationReport` (``checker`` is ``"not applicable"``:
        ``onnx.checker`` reads no ORT format).
    notes
        Anything worth knowing.
    """

    path: str
    source: str
    optimization_style: str
    target_platform: str | None
    operators: list[str]
    types: dict[str, list[str]]
    config_path: str | None
    file_bytes: int
    source_bytes: int
    validation: ValidationReport | None = None
    notes: list[str] = field(default_factory=list)


def to_ort(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    optimization_style: str = "fixed",
    target_platform: str | None = None,
    config: str | os.PathLike | None = None,
    validate: bool = True,
    atol: float = ORT_ATOL,
    rtol: float = ORT_RTOL,
    input_size: int | tuple[int, int] | None = None,
    batches: Sequence[int] | None = None,
    allow_float32_fallback: bool = False,
    timeout: float | None = 600.0,
) -> OrtReport:
    """Convert an ONNX file to ONNX Runtime's ORT format (``.ort``) with ONNX Runtime's converter.

    Parameters
    ----------
    source
        An ONNX file (float32 as :func:`tcompress.export_onnx` writes it, or float16); never
        modified, and nothing is written beside it.
    output
        The ``.ort`` file (its name must end in ``.ort``, by which ONNX Runtime recognises the
        format); written atomically, replacing an existing file, and with ``validate`` only if
        it passes. Nothing else is left beside it.
    optimization_style
        ``"fixed"`` (default; for the CPU provider) or ``"runtime"`` (for NNAPI / CoreML:
        their share of the graph is decided on the device; replaying the saved optimisations
        needs the session option ``session.enable_saved_runtime_optimizations``).
    target_platform
        ``None`` (default), ``"arm"`` or ``"amd64"`` (the converter's platform-specific
        optimisations: ``"amd64"`` bakes in x86's NCHWc layout, ``"arm"`` allows int8 QDQ
        kernels).
    config
        Where to write the converter's operators config (what a reduced ONNX Runtime build takes
        with ``--include_ops_by_config``); by default it is not kept.
    validate
        Load the ``.ort`` in ONNX Runtime and compare its outputs with the source's on seeded
        standard-normal inputs at batch 1 and 3 (or the file's fixed batch); a failure raises
        :class:`ExportError` and leaves no file.
    atol, rtol
        An output passes when max |ort - onnx| <= atol + rtol * max |onnx|.
    input_size
        Height and width of the validation inputs, where the source leaves them symbolic.
    batches
        Batch sizes validated (default: 1 and 3, or the file's fixed batch).
    allow_float32_fallback
        Keep the ``.ort`` of a float16 source even where ONNX Runtime's CPU provider has no
        float16 Conv and so stores float32 weights in it (refused by default).
    timeout
        Seconds the converter may take (None: no limit).

    Returns
    -------
    OrtReport

    Raises
    ------
    ExportError
        A missing or non-ONNX source, an output that is not a ``.ort`` path, is the source or has
        no folder, an unknown setting, a failure of the converter (its own message, one line), a
        float16 source converted to float32 kernels, or a failed validation.
    """
    style = _choice("optimization_style", optimization_style, OPTIMIZATION_STYLES)
    if target_platform not in TARGET_PLATFORMS:
        raise ExportError(
            f"{param('target_platform')} is {target_platform!r}; expected None, 'arm' or 'amd64'"
        )
    for name, value in (("validate", validate), ("allow_float32_fallback", allow_float32_fallback)):
        if not isinstance(value, bool):
            raise ExportError(f"{param(name)} is {value!r}; expected True or False")
    check_tolerances(atol, rtol)
    source = os.fspath(source)
    proto = read_source(source, single_file=True)
    out_path = _check_path("output", output, source, suffix=SUFFIX)
    config_path = _check_path("config", config, source) if config is not None else None
    if config_path is not None and config_path.resolve() == out_path.resolve():
        raise ExportError(f"{param('config')} is the output '{out_path}'; choose another path")
    half = _is_float16(proto)
    from tcompress.checkpoint import atomic_write, scratch_folder

    with scratch_folder(out_path) as work:
        work = Path(work).resolve()
        model_dir, out_dir = work / "model", work / "out"
        model_dir.mkdir()
        model = model_dir / (_stem(out_path) + ".onnx")
        _link_or_copy(source, model)
        _run_converter(model, out_dir, style, target_platform, source, timeout)
        made = sorted(out_dir.glob("*.ort"))
        configs = sorted(out_dir.glob("*.config"))
        if len(made) != 1:
            found = ", ".join(p.name for p in out_dir.iterdir()) or "nothing"
            raise ExportError(
                f"ONNX Runtime's converter wrote {found} for '{source}'; expected one .ort file"
            )
        operators, types = _read_config(configs[0]) if configs else ([], {})
        report = OrtReport(
            path=os.fspath(output),
            source=source,
            optimization_style=style,
            target_platform=target_platform,
            operators=operators,
            types=types,
            config_path=os.fspath(config_path) if config_path is not None else None,
            file_bytes=0,
            source_bytes=os.path.getsize(source),
        )
        if half:
            conv = types.get("ai.onnx:Conv", [])
            if conv and "MLFloat16" not in conv:
                message = (
                    f"'{source}' is float16, but ONNX Runtime's CPU provider here has no float16 "
                    "Conv: the converter cast the weights to float32 inside the .ort "
                    f"({made[0].stat().st_size} bytes); convert the float32 file instead, or pass "
                    f"{param('allow_float32_fallback', True)} to keep it"
                )
                if not allow_float32_fallback:
                    raise ExportError(message)
                report.notes.append(
                    "float16 source: the .ort holds float32 weights and runs Conv in float32 "
                    "(no float16 Conv in this ONNX Runtime's CPU provider)"
                )
        if style == "runtime":
            report.notes.append(
                "runtime style: its saved optimizations are replayed only with the session "
                "option session.enable_saved_runtime_optimizations=1"
            )
        if validate:
            report.validation = compare_ort(
                made[0],
                source,
                atol=atol,
                rtol=rtol,
                input_size=input_size,
                batches=batches,
                target_platform=target_platform,
            )
            if not report.validation.ok:
                raise ExportError(
                    f"the ORT-format file made from '{source}' failed validation: "
                    + "; ".join(report.validation.problems)
                )
        if config_path is not None and configs:
            atomic_write(config_path, lambda tmp: shutil.copyfile(configs[0], tmp))
        try:
            atomic_write(out_path, lambda tmp: shutil.copyfile(made[0], tmp))
        except BaseException:
            if config_path is not None and config_path.exists():
                config_path.unlink()
            raise
    report.file_bytes = os.path.getsize(out_path)
    log.info("wrote ORT format %s from %s (%s style)", out_path, source, style)
    return report


def compare_ort(
    ort_path: str | os.PathLike,
    onnx_path: str | os.PathLike,
    *,
    atol: float = ORT_ATOL,
    rtol: float = ORT_RTOL,
    input_size: int | tuple[int, int] | None = None,
    batches: Sequence[int] | None = None,
    target_platform: str | None = None,
    seed: int = 0,
) -> ValidationReport:
    """Compare an ORT-format file's outputs with its ONNX source's, both in ONNX Runtime's CPU
    provider, on seeded standard-normal inputs of the source's input type (float32 or float16).

    The source runs with the optimisations the converter applied for ``target_platform``: all
    of them, less the x86-only NCHWc layout unless ``target_platform="amd64"``. The two then run
    the same kernels and agree exactly (measured: 0 on every model tried); against ONNX
    Runtime's x86 default, NCHWc included, they differ by float32 summation order (up to 1.6e-6
    of the outputs' scale, measured).

    Returns a :class:`~tcompress.export.validate.ValidationReport`: ``names`` checks that both
    have the same inputs and outputs (names, element types), ``outputs`` holds one check per
    output and batch; ``checker`` is ``"not applicable"``.
    """
    import numpy as np
    import onnxruntime as ort

    report = ValidationReport(checker="not applicable")
    options = session_options()
    sessions = {}
    # The converter leaves out the NCHWc layout unless it targets amd64 (its own rule).
    disabled = None if target_platform == "amd64" else ["NchwcTransformer"]
    for label, p, skip in (("ORT-format file", ort_path, None), ("source", onnx_path, disabled)):
        try:
            sessions[label] = ort.InferenceSession(
                os.fspath(p), options, providers=[_CPU], disabled_optimizers=skip
            )
        except Exception as e:
            report.problems.append(f"ONNX Runtime cannot load the {label}: {_first_line(e)}")
            return report
    mine, theirs = sessions["ORT-format file"], sessions["source"]

    def signature(session):
        return (
            [(i.name, i.type) for i in session.get_inputs()],
            [(o.name, o.type) for o in session.get_outputs()],
        )

    if signature(mine) != signature(theirs):
        report.names = "failed"
        report.problems.append(
            f"inputs and outputs {signature(mine)}; expected the source's {signature(theirs)}"
        )
        return report
    report.names = "passed"
    inputs = theirs.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        report.problems.append(
            f"the source has inputs {[tuple(i.shape) for i in inputs]}; expected one image input"
        )
        return report
    image = inputs[0]
    shape = list(image.shape)
    layout, size = _spatial(shape, input_size, theirs, os.fspath(onnx_path))
    if batches is None:
        batches = (1, 3) if not isinstance(shape[0], int) else (shape[0],)
    dtype = np.float16 if image.type == "tensor(float16)" else np.float32
    rng = np.random.default_rng(seed)
    names = [o.name for o in theirs.get_outputs()]
    for batch in batches:
        x = rng.standard_normal(_full_shape(shape, layout, batch, size)).astype(dtype)
        try:
            want = theirs.run(None, {image.name: x})
            got = mine.run(None, {image.name: x})
        except Exception as e:
            report.problems.append(f"batch {batch}: ONNX Runtime failed: {_first_line(e)}")
            continue
        for name, g, w in zip(names, got, want):
            # A float16 output is rounded to 11 bits after the float32 arithmetic, so the two
            # files may differ by one unit in its last place: 2^-10 of the output's scale.
            relative = max(rtol, 2.0**-10) if w.dtype == np.float16 else rtol
            g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
            # The same kernels on both sides: outputs equal entry for entry, infinities
            # included, differ by 0.
            check = compare_output(batch, name, g, w, atol=atol, rtol=relative, nonfinite="equal")
            report.record(check)
    return report


# --- mobile usability -------------------------------------------------------------------------


@dataclass
class MobileUsability:
    """The verdicts of ONNX Runtime's mobile usability checker on an ONNX file.

    Attributes
    ----------
    available
        Whether this onnxruntime has the checker (``onnxruntime.tools
        .check_onnx_model_mobile_usability``); when not, every verdict is None.
    try_nnapi_or_coreml
        The checker's conclusion: True when NNAPI (Android) or CoreML (iOS) may run the model
        better than the CPU provider, worth timing on the device; False: use the CPU provider.
    verdicts
        Per provider (``"NNAPI"``, ``"CoreML NeuralNetwork"``, ``"CoreML MLProgram"``), how well
        it should run the model as it is: ``"YES"``, ``"MAYBE"`` or ``"NO"``.
    fixed_shape_verdicts
        The same if the model's dynamic dims (the batch) were fixed, where the checker looked
        (``python -m onnxruntime.tools.make_dynamic_shape_fixed`` fixes them; export with
        ``dynamic_batch=False`` does too).
    messages
        The checker's own lines, in order (partitions, unsupported operators, caveats).
    """

    source: str
    available: bool
    try_nnapi_or_coreml: bool | None = None
    verdicts: dict[str, str] = field(default_factory=dict)
    fixed_shape_verdicts: dict[str, str] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


_AS_IS = re.compile(r"^Model should perform well with (.+) as is: (\w+)$")
_FIXED = re.compile(
    r"^Model should perform well with (.+) if modified to have fixed input shapes: (\w+)$"
)


def mobile_usability(source: str | os.PathLike) -> MobileUsability:
    """Run ONNX Runtime's mobile usability checker on an ONNX file and return its verdicts.

    This is what ``python -m onnxruntime.tools.check_onnx_model_mobile_usability`` runs
    (``mobile_helpers.usability_checker.analyze_model``, after the same BASIC-level
    optimisation), with its log collected instead of printed; the command-line module itself is
    not imported, as it configures the root logger when imported.

    Raises
    ------
    ExportError
        A missing or non-ONNX source, or a failure of the checker (one line).
    """
    source = os.fspath(source)
    read_source(source, single_file=True)
    import importlib

    try:
        usability_checker = importlib.import_module(_CHECKER)
    except ImportError:
        return MobileUsability(source=source, available=False)

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.extend(
                line.strip() for line in record.getMessage().splitlines() if line.strip()
            )

    # A logger outside logging's registry: no parent, so nothing reaches the caller's handlers.
    logger = logging.Logger("tcompress.mobile_usability", logging.INFO)
    logger.addHandler(Collect())
    try:
        verdict = usability_checker.analyze_model(Path(source), skip_optimize=False, logger=logger)
    except Exception as e:  # the checker and its shape inference raise assorted types
        raise ExportError(
            f"ONNX Runtime's mobile usability checker failed on '{source}': {_first_line(e)}"
        ) from None
    result = MobileUsability(source=source, available=True, try_nnapi_or_coreml=bool(verdict))
    for line in records:
        if m := _AS_IS.match(line):
            result.verdicts[m[1]] = m[2]
        elif m := _FIXED.match(line):
            result.fixed_shape_verdicts[m[1]] = m[2]
        if line and set(line) != {"="}:
            result.messages.append(line)
    return result


# --- helpers ----------------------------------------------------------------------------------


# The tool's package imports torch at start-up for a helper the converter does not use
# (``onnxruntime.tools.pytorch_export_helpers``): 2 s of a 3 s run. The child hides torch and runs
# the tool's own command line; should a later tool need torch, the plain command runs instead.
_HIDE_TORCH = (
    "import runpy, sys; sys.modules.setdefault('torch', None); sys.argv[0] = {tool!r}; "
    "runpy.run_module({tool!r}, run_name='__main__', alter_sys=True)"
)


def _run_converter(model: Path, out_dir: Path, style: str, platform, source: str, timeout) -> None:
    arguments = [
        os.fspath(model),  # first: --optimization_style takes one or more values
        "--output_dir",
        os.fspath(out_dir),
        "--optimization_style",
        style.capitalize(),
        "--enable_type_reduction",
    ]
    if platform is not None:
        arguments += ["--target_platform", platform]
    fast = [sys.executable, "-c", _HIDE_TORCH.format(tool=_TOOL), *arguments]
    done = _run(fast, model, source, timeout)
    if done.returncode != 0 and re.search(r"No module named '?torch|import.*torch", done.stderr):
        shutil.rmtree(out_dir, ignore_errors=True)
        done = _run([sys.executable, "-m", _TOOL, *arguments], model, source, timeout)
    if done.returncode != 0:
        raise ExportError(
            f"ONNX Runtime's converter failed on '{source}': {_reason(done.stdout, done.stderr)}"
        )


def _run(command: list[str], model: Path, source: str, timeout) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            command,
            cwd=model.parent.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ExportError(
            f"ONNX Runtime's converter took more than {timeout:g} s on '{source}'; pass a larger "
            f"{param('timeout')}"
        ) from None


def _reason(stdout: str, stderr: str) -> str:
    """The converter's own error line: its 'Error converting ...: why' print, else the last line
    of the traceback."""
    for line in stdout.splitlines():
        if line.startswith("Error converting "):
            return line.split(": ", 1)[-1].strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def _read_config(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Operators ("domain;opset;op") and their element types from the converter's config, whose
    lines read ``domain;opset;Op{"inputs": {"0": ["float"]}},Op2`` after ``#`` comments."""
    operators, types = [], {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain, opset, ops = line.split(";", 2)
        for op, info in _split_ops(ops):
            operators.append(f"{domain};{opset};{op}")
            if info:
                try:
                    spec = json.loads(info)
                except ValueError:
                    continue
                kinds = sorted({t for group in spec.values() for ts in group.values() for t in ts})
                types[f"{domain}:{op}"] = kinds
    return operators, types


def _split_ops(ops: str):
    """``Op{json},Op2`` -> [("Op", "{json}"), ("Op2", "")], commas inside the braces kept."""
    depth, start, out = 0, 0, []
    for i, ch in enumerate(ops + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            item = ops[start:i]
            brace = item.find("{")
            out.append((item, "") if brace < 0 else (item[:brace], item[brace:]))
            start = i + 1
    return [(op.strip(), info) for op, info in out if op.strip()]


def _is_float16(proto: onnx.ModelProto) -> bool:
    from onnx import TensorProto

    return any(t.data_type == TensorProto.FLOAT16 for t in proto.graph.initializer)


def _check_path(name: str, value: Any, source: str, suffix: str | None = None) -> Path:
    path = output_path(name, value)
    if suffix is not None and path.suffix.lower() != suffix:
        raise ExportError(
            f"{name} '{path}' does not end in {suffix}; expected a {suffix} path (ONNX Runtime "
            "recognises the ORT format by it)"
        )
    return check_output(name, path, source)


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ExportError(f"{param(name)} is {value!r}; expected one of {', '.join(choices)}")
    return value.lower()


def _stem(path: Path) -> str:
    # A plain name for the tool (it derives its outputs' names from the model's).
    return re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) or "model"


def _link_or_copy(source: str, target: Path) -> None:
    """The source under a name of our own (a hard link where the filesystem allows, else a copy;
    never a symbolic link: the tool resolves it, and would write beside the source)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _spatial(shape: list, input_size, session, path: str) -> tuple[str, tuple[int, int]]:
    """The image input's layout (metadata, else shape) and the (height, width) to run at."""
    from tcompress.export.bench import LAYOUTS, input_layout

    metadata = session.get_modelmeta().custom_metadata_map
    try:
        layout = input_layout(shape, metadata, where=f"'{path}'")
    except BenchError as e:
        raise ExportError(str(e)) from None
    _, h, w = LAYOUTS[layout]
    if input_size is not None:
        return layout, requested_size(input_size)
    if isinstance(shape[h], int) and isinstance(shape[w], int):
        return layout, (shape[h], shape[w])
    raise ExportError(
        f"'{path}' does not fix its input's height and width; pass {param('input_size')}"
    )


def _full_shape(shape: list, layout: str, batch: int, size: tuple[int, int]) -> list[int]:
    """The input's shape with the batch and spatial dims given (channels: the file's own)."""
    from tcompress.export.bench import LAYOUTS

    c, h, w = LAYOUTS[layout]
    out = [batch, 0, 0, 0]
    out[c] = shape[c] if isinstance(shape[c], int) else 3
    out[h], out[w] = size
    return out
