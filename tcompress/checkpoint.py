"""Checkpoint files: safe reading (``weights_only``), unwrapping, prefixes; and the one way
tcompress writes any output file (:func:`atomic_write`).

Checkpoints are untrusted input. They are read with ``torch.load(weights_only=True)`` only, so a
file whose unpickling would run code is refused before anything in it runs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import pickle
import re
import secrets
import shutil
import signal
import stat
import threading
import warnings
import zipfile
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tcompress.errors import CheckpointError, OutputError, param

try:
    import fcntl
except ImportError:  # not POSIX: stale temporary files are then left for the user to remove
    fcntl = None

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


def check_new_files(paths: Iterable[str | os.PathLike], *, force: bool = False) -> None:
    """Refuse, before any work starts, the files of a folder command that already exist (unless
    ``force``) and any such name that is a folder.

    The same rule holds again when each file is moved into place (:func:`atomic_write` with
    ``force``): a file that appears in between is refused too.
    """
    for path in map(Path, paths):
        if path.is_dir():
            raise OutputError(f"output '{path}' is a directory; expected a file path")
        if os.path.lexists(path) and not force:
            raise OutputError(
                f"output '{path}' exists; pass {param('force', True)} to overwrite it"
            )


# Temporary files and folders beside an output are named ``.NAME.tcompress-XXXXXXXX.tmp``: hidden,
# recognisable as tcompress's own, and never taken for an output (every reader and every glob of
# tcompress looks for the output's own suffix). While one is in use, its writer holds an
# exclusive ``flock`` on it; the kernel drops the lock when the writer dies, even by SIGKILL.
_TEMP_MARK = ".tcompress-"
_TEMP_SUFFIX = ".tmp"
# Longest part (in bytes) of the output's name kept in a temporary name, so that the temporary
# name stays within the 255 bytes a file name may have.
_NAME_KEPT = 200
_ATTEMPTS = 100


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], None], *, force: bool = True
) -> None:
    """Write ``path`` all at once or not at all: ``write(tmp_path)`` fills a temporary file beside
    it, which is then flushed to disk and renamed into place, and the folder is synced.

    - The file gets the permissions a plain ``open(path, "w")`` would give it: a new file 0o666
      less the umask (created with ``os.open(..., 0o666)``, which applies the umask itself), a
      replaced one its old permission bits.
    - ``force=False`` refuses an existing ``path`` *at the moment of the rename*: the file is
      hard-linked to its name, which fails if the name exists, so a file that someone else
      creates while this one is written is kept, and :class:`~tcompress.errors.OutputError`
      says so. ``force=True`` (the default, as before) replaces it.
    - On any exception, Ctrl-C (KeyboardInterrupt) or SIGTERM (made to raise ``SystemExit`` while
      the file is written, unless the program handles SIGTERM itself), the temporary file is
      removed and an existing ``path`` is left as it was.
    - A temporary file left by a process killed outright (SIGKILL, power loss) is never read as
      an output, never stands in the way of a later write, and is removed by the next write of
      the same ``path`` once no live process holds it (see :func:`remove_stale_temporaries`).

    ``write`` may reopen and rewrite the temporary path as often as it likes; it must leave a file
    there.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    with _terminate_raises(), _temporary(path, directory=False) as tmp:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _move_into_place(tmp, path, force)
    _fsync_folder(path.parent)


@contextlib.contextmanager
def scratch_folder(target: str | os.PathLike) -> Iterator[str]:
    """A private folder beside ``target`` for the intermediate files of writing it (on the same
    filesystem, so that large intermediates do not fill a small /tmp), removed on the way out,
    whatever happens; one left by a killed process goes with the next write of ``target``."""
    target = Path(target)
    remove_stale_temporaries(target)
    with _terminate_raises(), _temporary(target, directory=True) as folder:
        yield folder


def save_torch(obj: Any, path: str | os.PathLike, *, force: bool = True) -> None:
    """``torch.save`` through :func:`atomic_write` (``force=False``: refuse an existing file)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp), force=force)


def temporary_names(target: str | os.PathLike) -> re.Pattern:
    """The names of the temporary files and folders that writing ``target`` uses (also a hard
    link such as ``NAME.tmp.ort`` that a writer makes beside its temporary file)."""
    name = _kept_name(Path(target))
    return re.compile(
        rf"\.{re.escape(name)}{re.escape(_TEMP_MARK)}[0-9a-f]{{8}}{re.escape(_TEMP_SUFFIX)}"
        r"(\.[A-Za-z0-9]+)?"
    )


def remove_stale_temporaries(target: str | os.PathLike) -> list[str]:
    """Remove the temporary files and folders of ``target`` that no live process holds; return
    their paths.

    Only names of :func:`temporary_names` are touched, and one only once its exclusive lock is
    taken here: a writer holds that lock for as long as it writes, so the file of a live writer
    (even one on another machine sharing the folder, where the filesystem supports the lock) is
    never removed, whatever its age. No age threshold is needed, and a stale file goes at the very
    next write of the same output. Where the lock cannot be taken or checked (no ``fcntl``, a
    filesystem without locks), nothing is removed.
    """
    if fcntl is None:
        return []
    target = Path(target)
    folder = target.parent
    pattern, prefix = temporary_names(target), f".{_kept_name(target)}{_TEMP_MARK}"
    try:
        # The cheap prefix test first: this runs at every write, in folders of many files too.
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and pattern.fullmatch(n)]
    except OSError:
        return []
    removed = []
    for name in names:
        candidate = os.path.join(folder, name)
        try:
            fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue  # gone already, a symbolic link, or unreadable: not ours to judge
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _names(candidate, fd):
                continue  # replaced since it was opened
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                os.unlink(candidate)
            removed.append(candidate)
        except OSError:
            continue  # held by a live writer (BlockingIOError), or the lock is unsupported
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def _temporary(target: Path, *, directory: bool) -> Iterator[str]:
    """A new temporary file (0o666 less the umask) or folder (0o700) beside ``target``, locked
    while in use and removed on the way out if it is still there."""
    folder = target.parent
    stem = f".{_kept_name(target)}{_TEMP_MARK}"
    for _ in range(_ATTEMPTS):
        path = os.path.join(folder, f"{stem}{secrets.token_hex(4)}{_TEMP_SUFFIX}")
        try:
            if directory:
                os.mkdir(path, 0o700)
                fd = os.open(path, os.O_RDONLY)
            else:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        try:
            if fcntl is not None:
                try:
                    # Blocks only while a cleaner that caught the name before the lock removes it.
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError:
                    pass  # a filesystem without locks: the file is then simply never cleaned
            if not _names(path, fd):
                os.close(fd)
                continue  # removed as stale between its creation and the lock: take another
        except BaseException:  # e.g. SIGTERM while waiting for the lock
            if _names(path, fd):
                (os.rmdir if directory else os.unlink)(path)
            os.close(fd)
            raise
        break
    else:
        raise OutputError(f"cannot create a temporary file beside '{target}'; check the folder")
    try:
        yield path
    finally:
        try:
            if directory:
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
        finally:
            os.close(fd)


def _kept_name(target: Path) -> str:
    """The output's name as its temporary names hold it: its first :data:`_NAME_KEPT` bytes."""
    return os.fsdecode(os.fsencode(target.name)[:_NAME_KEPT])


def _names(path: str, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        here, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def _move_into_place(tmp: str, path: Path, force: bool) -> None:
    """Rename the complete ``tmp`` to ``path``: replacing it with ``force``, else only if the name
    is free at this very moment (a hard link fails atomically when it is taken)."""
    if force:
        _keep_mode(path, tmp)
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise OutputError(
            f"output '{path}' exists now (another process may have created it while this one "
            f"was being written); it is kept and nothing was written: pass {param('force', True)} "
            "to overwrite it"
        ) from None
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        # A filesystem without hard links (some network and FAT filesystems): check, then rename;
        # a file created in the instant between the two is replaced.
        if os.path.lexists(path):
            raise OutputError(
                f"output '{path}' exists; pass {param('force', True)} to overwrite it"
            ) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _keep_mode(path: Path, tmp: str) -> None:
    """Give ``tmp`` the permission bits of the file it replaces, as writing over that file would
    keep them (a private 0o600 model stays private); setuid and the like are dropped."""
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(existing.st_mode):
        os.chmod(tmp, existing.st_mode & 0o777)


_NO_HARD_LINKS = {
    getattr(errno, name)
    for name in ("EPERM", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EMLINK", "EXDEV")
    if hasattr(errno, name)
}


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable: without this, a crash soon after can lose the new name
    even though the file's data were synced. Skipped where folders cannot be opened or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_signal_lock = threading.Lock()
_signal_depth = 0
_signal_previous: Any = None


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """While a temporary file exists, make SIGTERM raise ``SystemExit(143)`` so that the ``finally``
    clauses remove it; Python's default for SIGTERM is to die on the spot, leaving it behind.

    Only in the main thread (the only one that may set handlers) and only when SIGTERM has its
    default disposition: a program's own handler is left alone. Nested writes share one handler.
    The first SIGTERM raises; more during the clean-up are ignored.
    """
    global _signal_depth, _signal_previous
    installed = False
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        with _signal_lock:
            if _signal_depth:
                _signal_depth += 1
                installed = True
            elif signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                fired = []

                def terminate(signum, frame):
                    if not fired:
                        fired.append(signum)
                        raise SystemExit(128 + signum)

                _signal_previous = signal.signal(signal.SIGTERM, terminate)
                _signal_depth, installed = 1, True
    try:
        yield
    finally:
        if installed:
            with _signal_lock:
                _signal_depth -= 1
                if not _signal_depth:
                    signal.signal(signal.SIGTERM, _signal_previous)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""
