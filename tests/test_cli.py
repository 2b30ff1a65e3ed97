"""The command line as a user meets it: exit codes, one-line errors, files left or not."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.serialize import load
from tcompress.tnet import TNet

from .conftest import make_hourglass, outputs, scaled_error

T = ["--method", "tucker"]


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


class Evil:
    sentinel = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_convert_json_and_file(tmp_path, checkpoint, hourglass, x):
    out = tmp_path / "t.pt"
    r = cli("convert", checkpoint, *T, "--ranks", "1,2,3,2,4,4,3,3", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    for key in (
        "method",
        "ranks",
        "params_before",
        "params_after",
        "compression_ratio",
        "relative_error",
        "seconds",
    ):
        assert key in js
    assert js["ranks"] == [1, 2, 3, 2, 4, 4, 3, 3]
    assert js["params_before"] == sum(p.numel() for p in hourglass.parameters())
    assert js["params_after"] == sum(p.numel() for p in tcompress.load(out).parameters())
    assert js["compression_ratio"] == pytest.approx(js["params_before"] / js["params_after"])
    assert js["output"] == str(out)


def test_convert_tables(tmp_path, checkpoint):
    r = cli("convert", checkpoint, "--method", "mps", "--ranks", "3", "-o", tmp_path / "m.pt")
    assert r.exit_code == 0, r.output
    for text in (
        "MPS (tensor train)",
        "f_in | f_out",
        "whole network",
        "relative error",
        "bond 1: 3 capped at 2 (its maximal TT rank)",
        "wrote",
    ):
        assert text in r.stdout


def test_default_output_name(tmp_path, checkpoint):
    r = cli("convert", checkpoint, "--ranks", "full")
    assert r.exit_code == 0, r.output
    assert os.path.exists(os.path.join(tmp_path, "hg.tucker.pt"))


def test_info_dense_and_tnet(tmp_path, checkpoint):
    r = cli("info", checkpoint, "--json")
    assert r.exit_code == 0, r.output
    js = json.loads(r.stdout)
    assert js["kind"] == "dense" and js["mode_sizes"] == [2, 2, 3, 2, 8, 8, 3, 3]
    assert js["block_convs"] == 24
    out = tmp_path / "t.pt"
    assert cli("convert", checkpoint, "--ranks", "f_in=4", "-o", out).exit_code == 0
    js = json.loads(cli("info", out, "--json").stdout)
    assert js["kind"] == "tnet" and js["method"] == "tucker"
    assert js["ranks"] == [2, 2, 3, 2, 4, 8, 3, 3]
    r = cli("info", out)
    assert r.exit_code == 0 and "converted from" in r.stdout and "whole network" in r.stdout


@pytest.fixture
def bad_inputs(tmp_path, checkpoint):
    """name -> (convert arguments, words the one-line message must contain)."""
    d = tmp_path
    sentinel = d / "PWNED"
    Evil.sentinel = str(sentinel)
    sd = make_hourglass().state_dict()
    torch.save({"state_dict": sd, "extra": Evil()}, d / "evil.pth")
    with open(d / "evil2.pth", "wb") as f:
        pickle.dump(Evil(), f)
    data = open(checkpoint, "rb").read()
    (d / "trunc.pth").write_bytes(data[: len(data) // 2])
    (d / "empty.pth").write_bytes(b"")
    key = "hourglasses.1.levels.0.down.convs.1.weight"
    for name, value in (("nan", float("nan")), ("inf", float("inf"))):
        bad = dict(sd)
        bad[key] = bad[key].clone()
        bad[key].view(-1)[5] = value
        torch.save(bad, d / f"{name}.pth")
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2))
    torch.save(other.state_dict(), d / "other.pth")
    missing = {k: v for k, v in sd.items() if "scores.1" not in k}
    torch.save(missing, d / "partial.pth")
    ck = checkpoint
    return sentinel, {
        "too few ranks": ([ck, *T, "--ranks", "1,2"], "got 2 rank(s) ('1,2'); expected 8"),
        "rank above mode": (
            [ck, *T, "--ranks", "1,2,3,2,99,8,3,3"],
            "rank of mode f_in is 99; expected an integer from 1 to 8",
        ),
        "zero rank": ([ck, *T, "--ranks", "1,2,3,2,0,8,3,3"], "rank of mode f_in is 0"),
        "negative rank": ([ck, *T, "--ranks", "1,2,3,2,-4,8,3,3"], "rank of mode f_in is -4"),
        "non-integer rank": (
            [ck, *T, "--ranks", "1,2,3,2,8.5,8,3,3"],
            "rank of mode f_in is '8.5'; expected an integer",
        ),
        "mps bond count": ([ck, "--method", "mps", "--ranks", "2,3,4"], "got 3 MPS bond rank(s)"),
        "mps zero bond": (
            [ck, "--method", "mps", "--ranks", "1,2,6,0,8,3,3"],
            "MPS bond rank 4 is 0",
        ),
        "unknown method": ([ck, "--method", "svd-magic"], "method 'svd-magic' is unknown"),
        "missing file": ([d / "nope.pth", *T], "does not exist"),
        "empty file": ([d / "empty.pth", *T], "is empty (0 bytes)"),
        "truncated file": ([d / "trunc.pth", *T], "it is truncated or corrupt"),
        "unsafe wrapped": ([d / "evil.pth", *T], "is refused: loading it would run code"),
        "unsafe bare": ([d / "evil2.pth", *T], "is refused: loading it would run code"),
        "nan": ([d / "nan.pth", *T], f"'{key}' has 1 NaN value(s); expected finite weights"),
        "inf": ([d / "inf.pth", *T], f"'{key}' has 1 Inf value(s)"),
        "other architecture": (
            [d / "other.pth", *T],
            "is not a stacked hourglass tcompress knows: missing keys",
        ),
        "missing keys": ([d / "partial.pth", *T], "2 missing key(s) ('scores.1.weight'"),
        "refine with mps": (
            [ck, "--method", "mps", "--refine", "2"],
            "--refine 2 does not apply to mps (TT-SVD has no iterative refinement)",
        ),
    }


def test_bad_inputs_give_one_line_exit_2_and_no_output(tmp_path, bad_inputs):
    sentinel, cases = bad_inputs
    for name, (args, message) in cases.items():
        before = set(os.listdir(tmp_path))
        r = cli("convert", *args, "-o", tmp_path / "out.pt")
        assert r.exit_code == 2, (name, r.output)
        assert message in r.output, (name, r.output)
        assert len(r.output.strip().splitlines()) == 1, (name, r.output)
        assert r.output.startswith("Error: ")
        assert set(os.listdir(tmp_path)) == before, name
    assert not sentinel.exists()


def test_missing_output_directory(tmp_path, checkpoint):
    r = cli("convert", checkpoint, "-o", tmp_path / "no" / "dir" / "t.pt")
    assert r.exit_code == 2
    assert "output directory" in r.output and "does not exist" in r.output
    assert not (tmp_path / "no").exists()


def test_existing_output_needs_force(tmp_path, checkpoint, hourglass, x):
    out = tmp_path / "exists.pt"
    out.write_text("keep me")
    r = cli("convert", checkpoint, "-o", out)
    assert r.exit_code == 2 and "exists; pass --force to overwrite it" in r.output
    assert out.read_text() == "keep me"
    assert cli("convert", checkpoint, "-o", out, "--force").exit_code == 0
    tnet = tcompress.load(out).eval()
    assert scaled_error(outputs(tnet, x), outputs(hourglass, x)) <= 1e-5


def test_input_is_never_overwritten(checkpoint):
    data = open(checkpoint, "rb").read()
    r = cli("convert", checkpoint, "-o", checkpoint, "--force")
    assert r.exit_code == 2 and "is the input file" in r.output
    assert open(checkpoint, "rb").read() == data


def test_real_process_exit_code_and_no_traceback(tmp_path, checkpoint):
    """The installed entry points, as a user runs them."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tcompress",
            "convert",
            checkpoint,
            "--ranks",
            "1,2",
            "-o",
            str(tmp_path / "o.pt"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.strip().startswith("Error: got 2 rank(s)")
    assert not (tmp_path / "o.pt").exists()


def test_help_has_examples():
    for command in ("convert", "info", "demo"):
        r = cli(command, "--help")
        assert r.exit_code == 0 and "Example" in r.output


def test_demo_runs_every_stage_on_the_bundled_model(tmp_path):
    # a quick version of the whole demo: small inputs, 2 fine-tuning steps
    args = ("--steps", "2", "--train-samples", "40", "--val-samples", "8", "--image-size", "64")
    r = cli("demo", *args, "-o", tmp_path)
    assert r.exit_code == 0, r.output
    assert "PCKh@0.5" in r.stdout and "ONNX speed-up" in r.stdout
    said = " ".join(r.stdout.split())
    assert "on 40 synthetic samples rendered once" in said
    assert "every stack, fp32)" in said or "every stack, bf16)" in said  # the training precision
    stages = ("original", "T-Net, as converted", "BatchNorm re-estimated", "fine-tuned 2", "INT8")
    for stage in stages:
        assert stage in r.stdout
    assert "file size" in r.stdout
    files = {
        "hourglass.pth",
        "tnet.pt",
        "hourglass.onnx",
        "tnet-factorized.onnx",
        "tnet-dense.onnx",
        "tnet-factorized-int8.onnx",
        "tnet-dense-int8.onnx",
    }
    assert files <= set(os.listdir(tmp_path))
    assert isinstance(load(tmp_path / "tnet.pt"), TNet)


@pytest.mark.slow
def test_demo_default(tmp_path):
    r = cli("demo", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    original, *_, tuned = report["stages"]
    assert tuned["compression"] > 2.5
    assert tuned["pckh"] > original["pckh"] - 10
