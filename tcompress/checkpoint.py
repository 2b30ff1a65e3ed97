"""Checkpoint files: safe reading (``weights_only``), unwrapping, prefixes, atomic writes.

Checkpoints are untrusted input. They are read with ``torch.load(weights_only=True)`` only, so a
file whose unpickling would run code is refused before anything in it runs.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tcompress.errors import CheckpointError, OutputError, param

# Keys under which training scripts commonly wrap the model's state_dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Prefixes added by DataParallel / DistributedDataParallel, wrapper modules and torch.compile.
PREFIXES = ("model.module.", "module.", "_orig_mod.")


@dataclass
class Checkpoint:
    """What a checkpoint file holds once safely read.

    ``payload`` is the loaded object itself (for a tcompress T-Net file, its self-describing dict);
    ``state_dict`` the unwrapped, prefix-stripped tensors; ``sha256`` the file's checksum.
    """

    path: str
    payload: Any
    state_dict: dict[str, torch.Tensor]
    sha256: str

    @property
    def is_tnet(self) -> bool:
        return isinstance(self.payload, Mapping) and self.payload.get("format") == "tcompress.tnet"


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint safely and return its unwrapped state_dict.

    Accepts a bare state_dict, a dict wrapping one (under ``state_dict``, ``model_state_dict``,
    ``model`` or ``net``; other entries such as ``epoch`` or ``optimizer`` are ignored) and a
    tcompress T-Net file. Key prefixes ``module.``, ``model.module.`` and ``_orig_mod.`` are removed
    from the start of every key.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint '{path}' is a directory; expected a checkpoint file")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise CheckpointError(
            f"checkpoint '{path}' is empty (0 bytes); expected a file saved with torch.save"
        )
    payload = load_bytes(data, path)
    if isinstance(payload, Mapping) and payload.get("format") == "tcompress.tnet":
        state = payload.get("state_dict")
    else:
        state = unwrap(payload, path)
    return Checkpoint(path, payload, strip_prefixes(state, path), hashlib.sha256(data).hexdigest())


def load_bytes(data: bytes, path: str) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into one readable line."""
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols it did not write itself; the load is still safe.
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported" in text:
            found = re.search(r"Unsupported (?:global|operand|class)[^.\n]*", text)
            what = f" ({found.group(0).strip()})" if found else ""
            raise CheckpointError(
                f"checkpoint '{path}' is refused: loading it would run code or build objects "
                f"from the file{what}; tcompress only loads plain tensors (weights_only=True), "
                "so re-save it as a state_dict from trusted code"
            ) from None
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {_first_line(text)}") from None
    except (RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        text = _first_line(str(e)) or type(e).__name__
        if "central directory" in text or isinstance(e, EOFError):
            reason = "it is truncated or corrupt"
        else:
            reason = f"it is not a PyTorch checkpoint or is corrupt ({text})"
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {reason}") from None


def unwrap(payload: Any, path: str) -> Mapping[str, Any]:
    """The state_dict inside ``payload``: the payload itself, or the value of a wrapper key."""
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"checkpoint '{path}' holds a {type(payload).__name__}; expected a state_dict "
            "(a dict of tensors) or a dict wrapping one under 'state_dict'"
        )
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload
    for key in WRAPPER_KEYS:
        inner = payload.get(key)
        if isinstance(inner, Mapping) and inner:
            return unwrap(inner, path)
    found = ", ".join(repr(k) for k in list(payload)[:6]) or "nothing"
    raise CheckpointError(
        f"checkpoint '{path}' has no state_dict: found {found}; expected a dict of tensors "
        "or a dict wrapping one under 'state_dict'"
    )


def strip_prefixes(state: Mapping[str, Any], path: str) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes from the start of keys, repeatedly (``module._orig_mod.x``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"checkpoint '{path}': entry '{key}' is a {type(value).__name__}; "
                "expected every state_dict entry to be a tensor"
            )
        name = key
        while name.startswith(PREFIXES):
            name = next(name[len(p) :] for p in PREFIXES if name.startswith(p))
        if name in out:
            raise CheckpointError(
                f"checkpoint '{path}': keys '{key}' and another both become '{name}' once "
                "wrapper prefixes are removed"
            )
        out[name] = value
    return out


def check_finite(state: Mapping[str, torch.Tensor], path: str, skip: Container[str] = ()) -> None:
    """Refuse NaN or Inf in any floating-point tensor (parameters and buffers alike) whose key is
    not in ``skip``."""
    checked = {
        k: v for k, v in state.items() if k not in skip and v.is_floating_point() and v.numel()
    }
    if not checked:
        return
    # One fused check: a sum is finite when every entry is (barring overflow, which the exact
    # per-tensor search below then clears); the search only runs when the sum is not finite.
    sums = torch.stack([v.sum(dtype=torch.float64) for v in checked.values()])
    if bool(torch.isfinite(sums.sum())):
        return
    for key, value in checked.items():
        if not bool(torch.isfinite(value).all()):
            n_nan = int(torch.isnan(value).sum())
            n_inf = int(torch.isinf(value).sum())
            kinds = " and ".join(
                k for k, n in ((f"{n_nan} NaN", n_nan), (f"{n_inf} Inf", n_inf)) if n
            )
            raise CheckpointError(
                f"checkpoint '{path}': '{key}' has {kinds} value(s); expected finite weights"
            )


def check_output(
    out: str | os.PathLike, *, force: bool = False, inputs: tuple[str | os.PathLike, ...] = ()
) -> Path:
    """Validate an output path before any work is done; return it resolved.

    Refuses a missing parent directory, an existing file without ``force`` and, even with
    ``force``, a path that is one of the inputs.
    """
    out_path = Path(out).expanduser()
    parent = out_path.parent.resolve()
    if not parent.is_dir():
        raise OutputError(f"output directory '{out_path.parent}' does not exist; create it first")
    if out_path.is_dir():
        raise OutputError(f"output '{out_path}' is a directory; expected a file path")
    for source in inputs:
        if os.path.exists(source) and out_path.exists() and os.path.samefile(source, out_path):
            raise OutputError(f"output '{out_path}' is the input file; choose another output path")
    if out_path.exists() and not force:
        raise OutputError(
            f"output '{out_path}' exists; pass {param('force', True)} to overwrite it"
        )
    return out_path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    On any failure the temporary file is removed, so no half-written output is ever left.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""
