"""Every output is written the one safe way (:func:`tcompress.checkpoint.atomic_write`): with the
mode a plain write gives, all at once or not at all, never over a file it was not allowed to
replace, and nothing left behind that a later run could trip over, even after SIGKILL."""

import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.checkpoint import (
    atomic_write,
    check_new_files,
    remove_stale_temporaries,
    save_torch,
    scratch_folder,
    temporary_names,
)
from tcompress.cli import main
from tcompress.errors import OutputError
from tcompress.train import read_state

from .conftest import make_hourglass

RANKS = ["--ranks", "f_in=4,f_out=4"]
EXPORT = ["--form", "factorized", "--input-size", "32"]
FINETUNE = ["--data", "synthetic", "--steps", "6", "--batch-size", "4", "--image-size", "32"]
FINETUNE += ["--train-samples", "12", "--eval-samples", "4", "--save-every", "1"]
# One thread per process: the machine's two cores are shared with other work, and a run's
# arithmetic then does not depend on how many threads the process has.
SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS="1")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def leftovers(folder) -> list[str]:
    """Every temporary file or folder of tcompress in ``folder``."""
    return sorted(name for name in os.listdir(folder) if ".tcompress-" in name)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def dense(tmp_path):
    path = tmp_path / "hg.pth"
    torch.save(make_hourglass(n_joints=16).state_dict(), path)
    return path


# -- permissions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_outputs_get_the_mode_a_plain_write_gives(tmp_path, dense, umask):
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        with open(plain, "w"):
            pass
        r = cli("convert", dense, *RANKS, "-o", tmp_path / "t.pt")
        assert r.exit_code == 0, r.output
        r = cli("export", tmp_path / "t.pt", *EXPORT, "-o", tmp_path / "t.onnx")
        assert r.exit_code == 0, r.output
        r = cli("analyze", dense, "--points", "2", "-o", tmp_path / "an", "--json")  # a record
        assert r.exit_code == 0, r.output
        tcompress.save(tcompress.load(tmp_path / "t.pt"), tmp_path / "api.pt")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert mode(plain) == want
    written = ["t.pt", "t.onnx", "an/analysis.json", "an/analysis.png", "api.pt"]
    assert {name: mode(tmp_path / name) for name in written} == dict.fromkeys(written, want)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "an") == []


def test_a_replaced_output_keeps_its_permissions(tmp_path):
    target = tmp_path / "private.json"
    target.write_text("old")
    target.chmod(0o600)
    old = os.umask(0o022)
    try:
        atomic_write(target, lambda tmp: Path(tmp).write_text("new"))
    finally:
        os.umask(old)
    assert target.read_text() == "new" and mode(target) == 0o600


# -- failures during the write -------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt(), SystemExit(1)])
def test_an_interrupted_write_leaves_no_temporary_and_the_old_output(tmp_path, error):
    target = tmp_path / "out.pt"
    target.write_bytes(b"old")

    def broken(tmp):
        Path(tmp).write_bytes(b"partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.pt"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the write's handler is gone


def test_a_failing_convert_keeps_the_old_file(tmp_path, dense, monkeypatch):
    out = tmp_path / "t.pt"
    assert cli("convert", dense, *RANKS, "-o", out).exit_code == 0
    before = out.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    r = cli("convert", dense, *RANKS, "-o", out, "--force")
    assert r.exit_code != 0 and isinstance(r.exception, OSError)
    assert out.read_bytes() == before and leftovers(tmp_path) == []


def test_sigterm_during_the_write_removes_the_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from tcompress.checkpoint import atomic_write

        def write(tmp):
            with open(tmp, "w") as f:
                f.write("partial")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)

        atomic_write(sys.argv[1], write)
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(target)], timeout=120)
    assert done.returncode == 128 + signal.SIGTERM
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_a_scratch_folder_goes_whatever_happens(tmp_path):
    target = tmp_path / "model.ort"
    with pytest.raises(RuntimeError), scratch_folder(target) as work:
        assert temporary_names(target).fullmatch(os.path.basename(work))
        Path(work, "big.onnx").write_bytes(b"x" * 1000)
        raise RuntimeError("converter failed")
    assert os.listdir(tmp_path) == []


# -- a file that appears while ours is written ---------------------------------------------------


def test_a_file_created_during_the_write_is_kept_without_force(tmp_path):
    target = tmp_path / "out.json"

    def write(tmp):
        Path(tmp).write_text("ours")
        target.write_text("theirs")  # someone else, after any check made before the work

    with pytest.raises(OutputError, match=r"output '.*out\.json' exists now.*force=True"):
        atomic_write(target, write, force=False)
    assert target.read_text() == "theirs" and os.listdir(tmp_path) == ["out.json"]
    atomic_write(target, write, force=True)
    assert target.read_text() == "ours" and os.listdir(tmp_path) == ["out.json"]


def test_convert_refuses_a_file_created_while_it_converted(tmp_path, dense, monkeypatch):
    import tcompress.conversion

    out = tmp_path / "t.pt"
    convert = tcompress.conversion.convert

    def convert_then_someone_writes(*args, **kwargs):
        tnet = convert(*args, **kwargs)
        out.write_text("theirs")
        return tnet

    monkeypatch.setattr(tcompress.conversion, "convert", convert_then_someone_writes)
    r = cli("convert", dense, *RANKS, "-o", out)
    assert r.exit_code == 2, r.output
    assert f"Error: output '{out}' exists now" in r.output and "pass --force" in r.output
    assert out.read_text() == "theirs" and leftovers(tmp_path) == []


# -- temporary files a killed process left -------------------------------------------------------


def test_stale_temporaries_go_with_the_next_write_and_live_ones_stay(tmp_path):
    target = tmp_path / "out.pt"
    stale = [
        tmp_path / ".out.pt.tcompress-0123abcd.tmp",  # a file of a killed writer
        tmp_path / ".out.pt.tcompress-0123abcd.tmp.ort",  # the .ort name it made for it
        tmp_path / ".out.pt.tcompress-89abcdef.tmp",  # a killed export's scratch folder
    ]
    stale[0].write_bytes(b"half a model")
    stale[1].write_bytes(b"half a model")
    stale[2].mkdir()
    (stale[2] / "fp32.onnx").write_bytes(b"x")
    kept = [
        tmp_path / ".out.pt.tcompress-live0000.tmp",  # not a name of ours
        tmp_path / ".other.pt.tcompress-0123abcd.tmp",  # another output's
        tmp_path / ".out.pt.tcompress-fedcba98.tmp",  # a live writer's: locked
    ]
    for path in kept:
        path.write_bytes(b"")
    with open(kept[2], "rb") as live:
        fcntl.flock(live.fileno(), fcntl.LOCK_EX)
        # never taken for an output: hidden, and not of the output's suffix
        assert list(tmp_path.glob("*.pt")) == []
        save_torch({"w": torch.ones(2)}, target)
        assert [p.exists() for p in stale] == [False] * 3
        assert all(p.exists() for p in kept)
    assert torch.load(target)["w"].tolist() == [1.0, 1.0]
    # once its writer is gone (the lock released), the last one goes too
    assert remove_stale_temporaries(target) == [str(kept[2])]


# -- SIGKILL at random points --------------------------------------------------------------------


@pytest.fixture(scope="module")
def kill_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    torch.save(make_hourglass(n_joints=16).state_dict(), folder / "hg.pth")
    tcompress.save(tcompress.convert(folder / "hg.pth", ranks="f_in=4,f_out=4"), folder / "t.pt")
    return folder


def _commands(folder: Path, out: Path | None = None) -> dict:
    """Per command: its arguments (inputs in ``folder``, outputs in ``out``, by default the same
    folder), the files it writes, and how each is checked complete."""
    import onnx

    def onnx_complete(path):
        onnx.checker.check_model(str(path))

    out = out or folder
    return {
        "convert": (
            ["convert", folder / "hg.pth", *RANKS, "-o", out / "k.pt", "--force"],
            {out / "k.pt": tcompress.load},
        ),
        "export": (
            ["export", folder / "t.pt", *EXPORT, "-o", out / "k.onnx", "--force"],
            {out / "k.onnx": onnx_complete},
        ),
        "finetune": (
            ["finetune", folder / "t.pt", *FINETUNE, "-o", out / "ft.pt", "--force"],
            {out / "ft.pt": tcompress.load, out / "ft.pt.state": read_state},
        ),
    }


def _subprocess(args) -> subprocess.Popen:
    command = [sys.executable, "-m", "tcompress", *map(str, args), "--json"]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=SUBPROCESS_ENV
    )


def _one_thread_cli(*args):
    """The command in this process, on one thread like the subprocesses (the same arithmetic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cli(*args, "--json")
    finally:
        torch.set_num_threads(threads)


def _weights(path) -> dict:
    return tcompress.load(path).state_dict()


def _kill_at_random_points(folder: Path, command: str, kills: int, seed: int) -> None:
    """Run ``command`` in a subprocess and SIGKILL it at ``kills`` seeded random times; after each
    kill its outputs are absent or complete, and the next run (a resume for finetune) succeeds,
    leaves no temporary file and, for finetune, ends with the weights of an uninterrupted run."""
    args, files = _commands(folder)[command]
    started = time.perf_counter()
    assert _subprocess(args).wait(timeout=600) == 0  # the uninterrupted run: the old files
    seconds = time.perf_counter() - started
    reference = _weights(folder / "ft.pt") if command == "finetune" else None
    rng = random.Random(seed)
    state = folder / "ft.pt.state"
    for i in range(kills):
        # mostly after the imports, where the work and the writes are; some after the end
        at = rng.uniform(0.3 * seconds, 1.05 * seconds)
        if command == "finetune":
            state.unlink()  # so that a resume starts from the state the killed run wrote
        process = _subprocess(args)
        try:
            process.wait(timeout=at)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        where = f"{command} killed after {at:.2f} s (kill {i + 1} of {kills})"
        for path, complete in files.items():
            if path.exists():  # the complete old file or the complete new one, never a part
                try:
                    complete(path)
                except Exception as e:
                    pytest.fail(f"{where}: {path.name} is incomplete ({type(e).__name__}: {e})")
        # a temporary file the kill left, or one planted like it, never confuses the next run
        for path in files:
            (folder / f".{path.name}.tcompress-00000000.tmp").write_bytes(b"garbage")
        again = list(args)
        if command == "finetune" and state.exists():
            again += ["--resume", state]  # continue from the last complete state
        r = _one_thread_cli(*again)
        assert r.exit_code == 0, f"{where}; the next run failed: {r.output}"
        for path, complete in files.items():
            complete(path)
        assert leftovers(folder) == [], where
        if reference is not None:
            got = _weights(folder / "ft.pt")
            assert all(torch.equal(reference[k], got[k]) for k in reference), where


@pytest.mark.parametrize("command", ["convert", "export", "finetune"])
def test_sigkill_at_random_points_leaves_old_new_or_nothing(kill_folder, command):
    _kill_at_random_points(kill_folder, command, kills=3, seed=12)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["convert", "export", "finetune"])
def test_sigkill_at_twenty_random_points(kill_folder, command):
    _kill_at_random_points(kill_folder, command, kills=20, seed=2019)


DYING_WRITE = """
import os, signal, sys

import {module}

real = {module}.{function}


def dying(*args, **kwargs):
    # the temporary file is written, half of it is lost, and the process is killed outright
    real(*args, **kwargs)
    path = args[1]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    os.kill(os.getpid(), signal.SIGKILL)


{module}.{function} = dying
from tcompress.cli import main

main(sys.argv[1:])
"""


@pytest.mark.parametrize(
    "command, module, function",
    [("convert", "torch", "save"), ("export", "onnx", "save")],
)
def test_sigkill_inside_the_write(kill_folder, tmp_path, command, module, function):
    """Killed while the temporary file is half written: the old output is untouched, and the
    next run removes the temporary file and succeeds."""
    args, files = _commands(kill_folder, tmp_path)[command]
    ((target, complete),) = files.items()
    target.write_bytes(b"the old output")
    script = DYING_WRITE.format(module=module, function=function)
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        env=SUBPROCESS_ENV,
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert target.read_bytes() == b"the old output"
    (stale,) = leftovers(tmp_path)
    assert temporary_names(target).fullmatch(stale)
    r = _one_thread_cli(*args)
    assert r.exit_code == 0, r.output
    complete(target)
    assert leftovers(tmp_path) == []


# -- folder commands: demo, compare, analyze -----------------------------------------------------


class Stop(Exception):
    """Raised by a patched writer: the command got as far as writing its first file."""


ANALYZE = ["--points", "2", "--json"]
COMPARE = ["--ratios", "2", "--methods", "tucker", "--steps", "1", "--batch-size", "2"]
COMPARE += ["--seeds", "0", "--val-samples", "4", "--recalibrate", "2", "--bootstrap", "50"]
COMPARE += ["--image-size", "32", "--onnx-repeats", "1", "--no-baseline", "--json"]
DEMO = ["--steps", "1", "--train-samples", "4", "--val-samples", "4", "--image-size", "64"]


def _refused(r, path) -> None:
    assert r.exit_code == 2, r.output
    said = f"Error: output '{path}' exists; pass --force to overwrite it"
    assert said in r.output.splitlines(), r.output


def test_analyze_refuses_existing_files_without_force(tmp_path, dense):
    out = tmp_path / "an"
    out.mkdir()
    (out / "analysis.png").write_text("theirs")
    _refused(cli("analyze", dense, *ANALYZE, "-o", out), out / "analysis.png")
    assert sorted(os.listdir(out)) == ["analysis.png"]
    assert (out / "analysis.png").read_text() == "theirs"
    r = cli("analyze", dense, *ANALYZE, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert (out / "analysis.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "analysis.json").read_text())["mode_names"]


def test_analyze_refuses_a_file_created_while_it_ran(tmp_path, dense, monkeypatch):
    import tcompress.experiments.analysis as analysis

    out = tmp_path / "an"
    run = analysis.analyze

    def analyze_then_someone_writes(*args, **kwargs):
        report = run(*args, **kwargs)
        out.mkdir()
        (out / "analysis.json").write_text("theirs")
        return report

    monkeypatch.setattr(analysis, "analyze", analyze_then_someone_writes)
    r = cli("analyze", dense, *ANALYZE, "-o", out)
    assert r.exit_code == 2 and "exists now" in r.output and "--force" in r.output
    assert (out / "analysis.json").read_text() == "theirs" and leftovers(out) == []


@pytest.mark.parametrize("existing", ["compare.json", "uncompressed.onnx", "tucker-2x-dense.onnx"])
def test_compare_refuses_existing_files_before_any_work(tmp_path, dense, existing, monkeypatch):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / existing).write_text("theirs")

    def no_work(*args, **kwargs):
        raise AssertionError("compare started working although a file of it exists")

    monkeypatch.setattr(torch.onnx, "export", no_work)
    _refused(cli("compare", dense, *COMPARE, "-o", out), out / existing)
    assert os.listdir(out) == [existing] and (out / existing).read_text() == "theirs"


def test_compare_with_force_gets_to_work_and_checks_again_at_each_file(
    tmp_path, dense, monkeypatch
):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text("theirs")

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(torch.onnx, "export", stop)
    r = cli("compare", dense, *COMPARE, "-o", out, "--force")
    assert isinstance(r.exception, Stop), r.output  # past the checks, at its first file

    # without --force, a file that appears once the work has started is refused at its rename
    monkeypatch.undo()
    export = torch.onnx.export
    fresh = tmp_path / "fresh"

    def someone_writes_first(*args, **kwargs):
        (fresh / "uncompressed.onnx").write_text("theirs")
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", someone_writes_first)
    r = cli("compare", dense, *COMPARE, "-o", fresh)
    assert r.exit_code == 2 and f"output '{fresh / 'uncompressed.onnx'}' exists now" in r.output
    assert (fresh / "uncompressed.onnx").read_text() == "theirs" and leftovers(fresh) == []


def test_demo_refuses_existing_files_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "tnet.pt").write_text("theirs")

    def no_work(*args, **kwargs):
        raise AssertionError("the demo started working although a file of it exists")

    import tcompress.models

    monkeypatch.setattr(tcompress.models, "pretrained", no_work)
    _refused(cli("demo", *DEMO, "-o", tmp_path), tmp_path / "tnet.pt")
    assert os.listdir(tmp_path) == ["tnet.pt"] and (tmp_path / "tnet.pt").read_text() == "theirs"


def test_demo_with_force_gets_to_work_and_checks_again_at_each_file(tmp_path, monkeypatch):
    (tmp_path / "tnet.pt").write_text("theirs")
    save = torch.save

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(torch, "save", stop)
    r = cli("demo", *DEMO, "-o", tmp_path, "--force")
    assert isinstance(r.exception, Stop), r.output  # past the checks, at its first file
    assert leftovers(tmp_path) == []

    fresh = tmp_path / "fresh"

    def someone_writes_first(obj, f, *args, **kwargs):
        (fresh / "hourglass.pth").write_text("theirs")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", someone_writes_first)
    r = cli("demo", *DEMO, "-o", fresh)
    assert r.exit_code == 2 and f"output '{fresh / 'hourglass.pth'}' exists now" in r.output
    assert os.listdir(fresh) == ["hourglass.pth"]
    assert (fresh / "hourglass.pth").read_text() == "theirs"


def test_check_new_files_names_the_file_and_the_flag(tmp_path):
    (tmp_path / "a.onnx").write_text("")
    (tmp_path / "b.onnx").mkdir()
    with pytest.raises(OutputError, match="pass force=True to overwrite it") as info:
        check_new_files([tmp_path / "new.onnx", tmp_path / "a.onnx"])
    assert info.value.for_command() == (
        f"output '{tmp_path / 'a.onnx'}' exists; pass --force to overwrite it"
    )
    check_new_files([tmp_path / "a.onnx"], force=True)
    with pytest.raises(OutputError, match="is a directory"):
        check_new_files([tmp_path / "b.onnx"], force=True)
