"""Library errors name the caller's parameters (``lr``, ``force=True``); the command line prints
the same errors with its flags (``--lr``, ``--force``): :func:`tcompress.errors.param`."""

import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tcompress.checkpoint import check_output
from tcompress.cli import main, one_line
from tcompress.data.images import write_image
from tcompress.errors import CheckpointError, DataError, OutputError, TcompressError, param
from tcompress.train import TrainSettings, fit, read_state
from tcompress.train.distributed import setup

from .conftest import make_hourglass
from .test_train import Cached, tiny_model


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    """The last line a failed command printed (a training run draws its progress bar first)."""
    assert result.exit_code == 2, result.output
    return result.output.splitlines()[-1]


# -- the mechanism -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "named, python, flag",
    [
        (param("lr"), "lr", "--lr"),
        (param("save_every"), "save_every", "--save-every"),
        (param("force", True), "force=True", "--force"),
        (param("device", "cpu"), "device='cpu'", "--device cpu"),
        (param("steps", 3), "steps=3", "--steps 3"),
        (param("teacher", metavar="ORIGINAL"), "teacher=ORIGINAL", "--teacher ORIGINAL"),
    ],
)
def test_a_parameter_is_spelled_for_python_and_for_the_command_line(named, python, flag):
    error = TcompressError(f"try ({named}) again")
    assert str(error) == f"try ({python}) again" and error.args == (f"try ({python}) again",)
    assert error.for_command() == f"try ({flag}) again"


def test_a_command_maps_a_parameter_to_its_own_flag():
    error = DataError(f"give one ({param('teacher', metavar='ORIGINAL')}) or ({param('lr')})")
    assert error.params == ("teacher", "lr")
    assert str(error) == "give one (teacher=ORIGINAL) or (lr)"
    assert (
        error.for_command({"teacher": "--distill-from"})
        == "give one (--distill-from ORIGINAL) or (--lr)"
    )
    assert one_line(error, {"teacher": "--distill-from"}) == error.for_command(
        {"teacher": "--distill-from"}
    )


def test_errors_without_parameters_are_unchanged():
    assert TcompressError().args == () and str(TcompressError()) == ""
    plain = OutputError("plain")
    assert (str(plain), plain.for_command(), plain.params) == ("plain", "plain", ())
    assert TcompressError("a", 2).for_command() == str(TcompressError("a", 2)) == "('a', 2)"


def test_a_pickled_error_keeps_the_parameters_it_names():
    # as from a DataLoader worker process
    error = pickle.loads(pickle.dumps(OutputError(f"pass {param('force', True)}")))
    assert type(error) is OutputError
    assert (str(error), error.for_command(), error.params) == (
        "pass force=True",
        "pass --force",
        ("force",),
    )


# -- the raise sites: the library's words, then the command's -------------------------------


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "hg.pth"
    torch.save(make_hourglass(n_joints=16).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Four unlabeled images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        write_image(root / f"{i}.png", (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    return root


FINETUNE = ["--steps", "1", "--batch-size", "2", "--image-size", "64", "--train-samples", "4"]


def test_an_existing_output_names_force(dense, tmp_path):
    out = tmp_path / "out.pt"
    out.write_text("keep")
    with pytest.raises(OutputError) as info:
        check_output(out)
    assert str(info.value) == f"output '{out}' exists; pass force=True to overwrite it"
    r = cli("recalibrate", dense, "--data", "synthetic", "-o", out)
    assert r.exit_code == 2
    assert r.output == f"Error: output '{out}' exists; pass --force to overwrite it\n"


def test_an_unavailable_device_names_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TcompressError) as info:
        setup("cuda")
    assert str(info.value) == "device 'cuda': CUDA is not available here; use device='cpu'"
    # the command line: "use --device cpu" (test_train.test_cli_unavailable_device_is_one_line)


def test_a_file_that_is_no_training_state_names_save_every(dense, tmp_path):
    with pytest.raises(CheckpointError) as info:
        read_state(dense)
    words = "is not a training state to resume from (written by {})"
    assert str(info.value) == f"'{dense}' " + words.format("save_every")
    r = cli(
        "finetune",
        dense,
        "--data",
        "synthetic",
        *FINETUNE,
        "--resume",
        dense,
        "-o",
        tmp_path / "o.pt",
    )
    assert error_line(r) == f"Error: '{dense}' " + words.format("--save-every")


def test_unlabeled_data_names_the_teacher(dense, folder, tmp_path):
    words = (
        "the data has no heatmap labels (a plain image folder?): train with a teacher and "
        "distillation weight 1 ({}), or give a labelled data set"
    )
    with pytest.raises(DataError) as info:
        fit(tiny_model(), Cached(4, labels=False), TrainSettings(steps=1, batch_size=2))
    assert str(info.value) == words.format("teacher=ORIGINAL")
    for command in (["finetune", dense], ["train", "--stacks", "1", "--features", "8"]):
        r = cli(*command, "--data", folder, *FINETUNE, "-o", tmp_path / "out.pt")
        assert error_line(r) == "Error: " + words.format("--distill-from ORIGINAL")


def test_a_diverging_loss_names_lr(dense, tmp_path):
    with pytest.raises(TcompressError) as info:
        fit(tiny_model(), Cached(4), TrainSettings(steps=3, batch_size=2, lr=1e30))
    assert str(info.value).endswith("; lower the learning rate (lr)")
    assert info.value.params == ("lr",)
    args = [*FINETUNE, "--steps", "3", "--lr", "1e30", "-o", tmp_path / "o.pt"]
    line = error_line(cli("finetune", dense, "--data", "synthetic", *args))
    assert line.startswith("Error: the loss became ")
    assert line.endswith("; lower the learning rate (--lr)")
