"""tcompress.evaluate from Python: the whole of ``tcompress evaluate`` (the model loaded, the data
set built, MPII's rules, the .mat files), returning what the command prints."""

import json

import pytest
from click.testing import CliRunner
from scipy.io import loadmat

import tcompress
from tcompress.cli import main
from tcompress.errors import EvaluationError, OutputError
from tcompress.evaluation import Evaluation
from tcompress.models import pretrained_path

from .test_mpii_pipeline import write_mpii

# 4 synthetic samples at 64x64 (the bundled model's smallest input), in one batch of 4
SMALL = dict(n=4, image_size=64, batch_size=4)
CLI_SMALL = ["-n", "4", "--image-size", "64", "--batch-size", "4"]


@pytest.fixture(scope="module")
def bundled():
    return str(pretrained_path())


@pytest.fixture(scope="module")
def mpii(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpii")
    write_mpii(root, n=4, n_val=2)
    return root


def test_the_top_level_name_is_the_library_function():
    from tcompress.evaluation import run

    assert tcompress.evaluate is tcompress.evaluation.evaluate is run.evaluate


def test_evaluate_returns_what_the_cli_prints(bundled):
    calls = []
    report = tcompress.evaluate(bundled, "synthetic", progress=lambda *a: calls.append(a), **SMALL)
    assert isinstance(report, Evaluation)
    assert (report.model, report.kind, report.rules) == (bundled, "dense", "crop")
    assert report.result.n_samples == 4 and report.image_size == 64 and report.preds_mat is None
    assert calls == [(0, 1), (1, 1)]  # once the data set is built, then after every batch

    r = CliRunner().invoke(main, ["evaluate", bundled, *CLI_SMALL, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads(json.dumps(report.to_dict()))
    assert "preds_mat" not in report.to_dict()


def test_predictions_are_written_on_mpii_data(bundled, mpii, tmp_path):
    preds = tmp_path / "preds.mat"
    report = tcompress.evaluate(bundled, mpii, image_size=64, preds_mat=preds)
    assert report.rules == "mpii" and report.preds_mat == str(preds)
    assert list(report.to_dict())[-1] == "preds_mat"  # where the command printed it
    assert loadmat(preds)["preds"].shape == (2, 16, 2)
    with pytest.raises(OutputError, match=r"exists; pass force=True to overwrite it$"):
        tcompress.evaluate(bundled, mpii, image_size=64, preds_mat=preds)
    assert tcompress.evaluate(bundled, mpii, image_size=64, preds_mat=preds, force=True).preds_mat


def test_preds_mat_needs_mpii_data_and_is_checked_first(bundled, tmp_path):
    preds, calls = tmp_path / "p.mat", []
    message = "preds_mat writes MPII predictions; data 'synthetic' is not an MPII-style set"
    with pytest.raises(EvaluationError, match=f"^{message}$") as info:
        tcompress.evaluate(bundled, preds_mat=preds, progress=lambda *a: calls.append(a), **SMALL)
    assert info.value.params == ("preds_mat",)
    assert calls == [] and not preds.exists()  # refused before any prediction
    # the output is checked before the model is even read
    preds.write_bytes(b"keep")
    with pytest.raises(OutputError, match="exists; pass force=True"):
        tcompress.evaluate(tmp_path / "missing.pth", preds_mat=preds)
    assert preds.read_bytes() == b"keep"


def test_the_cli_names_its_flags(bundled, tmp_path):
    args = ["evaluate", bundled, *CLI_SMALL, "--preds-mat", str(tmp_path / "p.mat")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    assert r.output == (
        "Error: --preds-mat writes MPII predictions; data 'synthetic' is not an MPII-style set\n"
    )
