"""tcompress.finetune and tcompress.train.train from Python: the runs of ``tcompress finetune``
and ``tcompress train``, their files, their summary, repeated and resumed, without the CLI."""

import json
import logging

import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.errors import OutputError, TcompressError
from tcompress.models import HourglassConfig, StackedHourglass
from tcompress.train import FinetuneResult, TrainingInterrupted, TrainSettings, read_state, train

from .conftest import make_hourglass

# 3 steps of 4 images of 64x64 from 12 synthetic samples; PCKh on 4 validation samples.
SMALL = dict(steps=3, batch_size=4, image_size=64, train_samples=12, eval_samples=4)
CLI_SMALL = ["--steps", "3", "--batch-size", "4", "--image-size", "64", "--train-samples", "12"]
CLI_SMALL += ["--eval-samples", "4"]


@pytest.fixture(scope="module")
def tnet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("finetune") / "t.pt"
    tnet = tcompress.convert(make_hourglass(n_joints=16), ranks={"f_in": 4, "f_out": 4})
    tcompress.save(tnet, path)
    return path


def weights(path_or_model) -> dict:
    model = (
        path_or_model
        if isinstance(path_or_model, torch.nn.Module)
        else tcompress.load(path_or_model)
    )
    return model.state_dict()


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def timeless(summary: dict) -> dict:
    """A summary without its timings (seconds, images per second) and output paths."""
    out = {k: v for k, v in summary.items() if k not in ("seconds", "output", "state")}
    out["history"] = [{k: v for k, v in h.items() if k != "images_per_s"} for h in out["history"]]
    return out


def test_finetune_writes_the_model_and_returns_what_the_cli_prints(tnet_file, tmp_path):
    result = tcompress.finetune(tnet_file, "synthetic", output=tmp_path / "py.pt", **SMALL)
    assert isinstance(result, FinetuneResult) and result.main
    assert result.output == tmp_path / "py.pt" and result.state is None
    assert tcompress.load(tmp_path / "py.pt").method == "tucker"
    assert result.training.steps == 3 and result.training.images == 12
    assert result.settings.schedule == "cosine" and result.settings.lr == 1e-4  # finetune's
    assert result.settings.distill_weight == 0.0  # no teacher
    assert not result.model.training and same_weights(weights(result.model), weights(result.output))

    args = ["finetune", str(tnet_file), "--data", "synthetic", *CLI_SMALL]
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "cli.pt"), "--json"])
    assert r.exit_code == 0, r.output
    printed, summary = json.loads(r.output), result.to_dict()
    assert list(printed) == list(summary)
    assert summary["output"] == str(tmp_path / "py.pt") and summary["state"] is None
    assert timeless(printed) == timeless(summary)  # the same run, to the last bit of the loss
    assert same_weights(weights(tmp_path / "py.pt"), weights(tmp_path / "cli.pt"))


def test_a_new_network_repeats_bit_for_bit_with_its_seed():
    config = HourglassConfig(n_stacks=1, depth=2, block_depth=1, features=8)
    a = train(config, "synthetic", **SMALL)
    # the same run from a TrainSettings (train's defaults are the dataclass's) and a mapping
    settings = TrainSettings(steps=3, batch_size=4)
    options = {k: v for k, v in SMALL.items() if k not in ("steps", "batch_size")}
    b = train(config.to_dict(), "synthetic", settings=settings, **options)
    c = train(config, "synthetic", **{**SMALL, "seed": 1})
    assert isinstance(a.model, StackedHourglass) and a.output is None
    assert a.to_dict()["output"] is None and a.settings == b.settings
    assert same_weights(weights(a.model), weights(b.model))
    assert a.training.final_loss == b.training.final_loss
    assert not same_weights(weights(a.model), weights(c.model))


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tnet_file, tmp_path):
    whole = tcompress.finetune(tnet_file, "synthetic", output=tmp_path / "whole.pt", **SMALL)

    def interrupt(event):
        if event["kind"] == "step" and event["step"] == 3:
            raise KeyboardInterrupt

    cut = dict(SMALL, output=tmp_path / "cut.pt", save_every=2)
    with pytest.raises(TrainingInterrupted) as stop:
        tcompress.finetune(tnet_file, "synthetic", on_event=interrupt, **cut)
    assert isinstance(stop.value, KeyboardInterrupt) and stop.value.main
    assert stop.value.state == tmp_path / "cut.pt.state"
    assert not (tmp_path / "cut.pt").exists() and read_state(stop.value.state)["step"] == 2

    resumed = tcompress.finetune(tnet_file, "synthetic", resume=stop.value.state, **cut)
    assert resumed.training.steps == 3 and resumed.state == tmp_path / "cut.pt.state"
    assert resumed.training.final_loss == whole.training.final_loss
    assert same_weights(weights(tmp_path / "whole.pt"), weights(tmp_path / "cut.pt"))


def test_events_status_lines_and_warnings_go_to_the_callbacks(tnet_file, monkeypatch, caplog):
    import tcompress.train

    monkeypatch.setattr(tcompress.train, "native_bf16", lambda device: False)
    events, lines = [], []
    result = tcompress.finetune(
        tnet_file,
        "synthetic",
        cache=True,
        recalibrate=8,
        precision="bf16",
        on_event=events.append,
        progress=lines.append,
        **SMALL,
    )
    assert result.cached_samples == 12 and result.recalibrated_images == 8
    kinds = [e["kind"] for e in events]
    assert kinds == ["warning", "start", "step", "step", "step", "eval"]
    assert events[0]["name"] == "bf16-emulated" and "precision='bf16'" in events[0]["message"]
    assert events[1] == {"kind": "start", "steps": 3}
    assert lines[0] == "Caching 12 training samples" and "Caching training samples: 12/12" in lines
    assert lines[-1] == "Re-estimating BatchNorm statistics"

    # without on_event, the warning is logged; the library prints nothing
    with caplog.at_level(logging.WARNING, logger="tcompress.train.finetune"):
        tcompress.finetune(tnet_file, "synthetic", precision="bf16", **{**SMALL, "steps": 1})
    assert "cpu has no native bfloat16 arithmetic here; precision='bf16'" in caplog.text


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(save_every=2), OutputError, r"save_every=2 writes .*; give output="),
        (dict(recalibrate=-1), TcompressError, r"recalibrate= must be an integer >= 0, got -1"),
        (dict(train_samples=0), TcompressError, r"train_samples= must be an integer >= 1, got 0"),
        (dict(workers=1.5), TcompressError, r"workers= must be an integer >= 0, got 1.5"),
        (dict(image_size=8), TcompressError, r"image_size= must be an integer >= 16, got 8"),
        (dict(config={"features": 8}), TcompressError, r"give model= .* or config= .*, one of"),
        (dict(learning_rate=1e-3), TypeError, r"argument\(s\) learning_rate; expected .* lr,"),
    ],
)
def test_errors_name_the_parameter(tnet_file, tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        tcompress.finetune(tnet_file, "synthetic", **{**SMALL, **options})


def test_neither_a_model_nor_a_config_is_an_error():
    with pytest.raises(TcompressError, match="got model=None and config=None"):
        tcompress.finetune(None, "synthetic")


def test_the_top_level_name_is_the_library_function():
    assert tcompress.finetune is tcompress.train.finetune
    assert "finetune" in tcompress.__all__
