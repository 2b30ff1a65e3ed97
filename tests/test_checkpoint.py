import os
import pickle

import pytest
import torch

from tcompress.checkpoint import (
    atomic_write,
    check_finite,
    check_output,
    read_checkpoint,
    strip_prefixes,
)
from tcompress.errors import CheckpointError, OutputError

from .conftest import make_hourglass


class Evil:
    """Unpickling this runs a shell command that creates a sentinel file."""

    sentinel = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.fixture
def state():
    return make_hourglass().state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {
            "state_dict": sd,
            "epoch": 3,
            "arch": "hg",
            "best_acc": 0.5,
            "optimizer": {"state": {}, "param_groups": []},
            "meta": {"note": "x"},
        },
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"model.module.{k}": v for k, v in sd.items()}, "epoch": 1},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
        lambda sd: {f"module._orig_mod.{k}": v for k, v in sd.items()},
    ],
    ids=["bare", "wrapped", "module", "model.module", "_orig_mod", "module._orig_mod"],
)
def test_layouts_unwrap_to_the_same_state(tmp_path, state, wrap):
    path = tmp_path / "ck.pth"
    torch.save(wrap(state), path)
    ckpt = read_checkpoint(path)
    assert list(ckpt.state_dict) == list(state)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in state.items())
    assert len(ckpt.sha256) == 64


def test_prefix_is_stripped_only_at_the_start():
    t = torch.zeros(1)
    out = strip_prefixes({"a.module.b": t, "module.c.module.d": t}, "x")
    assert list(out) == ["a.module.b", "c.module.d"]


def test_collision_after_stripping_is_an_error():
    t = torch.zeros(1)
    with pytest.raises(CheckpointError, match="both become 'a'"):
        strip_prefixes({"a": t, "module.a": t}, "x")


@pytest.mark.parametrize("bare", [True, False])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, state, bare):
    sentinel = tmp_path / "PWNED"
    Evil.sentinel = str(sentinel)
    path = tmp_path / "evil.pth"
    if bare:
        with open(path, "wb") as f:
            pickle.dump(Evil(), f)
    else:
        torch.save({"state_dict": state, "extra": Evil()}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert "is refused: loading it would run code" in str(info.value)
    assert "weights_only=True" in str(info.value)
    assert not sentinel.exists()


def test_missing_empty_truncated_directory_and_garbage(tmp_path, state):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        read_checkpoint(tmp_path / "empty.pth")
    torch.save(state, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read: it is truncated or corrupt"):
        read_checkpoint(tmp_path / "trunc.pth")
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path)
    (tmp_path / "text.pth").write_text("hello world")
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(tmp_path / "text.pth")


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list; expected a state_dict"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="has no state_dict: found 'epoch', 'lr'"):
        read_checkpoint(tmp_path / "meta.pth")


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_non_finite_weights_and_buffers(state, value, word):
    bad = dict(state)
    key = "hourglasses.0.levels.0.skip.bns.0.running_var"
    bad[key] = bad[key].clone()
    bad[key][2] = value
    with pytest.raises(CheckpointError) as info:
        check_finite(bad, "ck.pth")
    assert (
        str(info.value)
        == f"checkpoint 'ck.pth': '{key}' has 1 {word} value(s); expected finite weights"
    )


def test_check_output(tmp_path):
    existing = tmp_path / "out.pt"
    existing.write_text("keep")
    with pytest.raises(OutputError, match="exists; pass force=True to overwrite it$"):
        check_output(existing)
    assert check_output(existing, force=True) == existing
    with pytest.raises(OutputError, match="output directory '.*no/dir' does not exist"):
        check_output(tmp_path / "no" / "dir" / "t.pt")
    with pytest.raises(OutputError, match="is the input file"):
        check_output(existing, force=True, inputs=(existing,))
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path, force=True)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.pt"
    target.write_text("old")

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert sorted(os.listdir(tmp_path)) == ["out.pt"]
    assert target.read_text() == "old"
    atomic_write(target, lambda tmp: open(tmp, "w").write("new"))
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out.pt"]
