"""tcompress analyze: spectra and the one-mode sweep agree with direct conversions."""

import json

import pytest
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.experiments.analysis import analyze, sweep_ranks

from .conftest import make_hourglass


def test_sweep_ranks():
    assert sweep_ranks(4) == [1, 2, 3]
    assert sweep_ranks(128, 8) == [1, 16, 32, 48, 64, 80, 96, 112]


def test_sweep_agrees_with_direct_conversions():
    hg = make_hourglass(features=16)
    report = analyze(hg, points=4)
    assert report.params_before == sum(p.numel() for p in hg.parameters())
    for curve in report.energy.values():
        assert curve == sorted(curve) and curve[-1] == pytest.approx(1.0)
    checked = [p for p in report.sweep if p.mode in ("depth", "f_out", "h")]
    assert len(checked) == 1 + 4 + 2
    for point in checked:
        s = tcompress.convert(hg, ranks=point.ranks).summary
        assert point.params_after == s["params_after"]
        assert point.compression_ratio == pytest.approx(s["compression_ratio"])
        assert point.relative_error == pytest.approx(s["relative_error"], abs=1e-5)


def test_cli_writes_table_json_and_png(tmp_path):
    import torch

    checkpoint = str(tmp_path / "hg.pth")
    torch.save(make_hourglass(n_joints=16).state_dict(), checkpoint)
    out = tmp_path / "an"
    r = CliRunner().invoke(
        main,
        [
            "analyze",
            checkpoint,
            "--data",
            "synthetic",
            "--val-samples",
            "2",
            "--image-size",
            "32",
            "--points",
            "2",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "One mode truncated at a time" in r.output and "PCKh@0.5" in r.output
    report = json.loads((out / "analysis.json").read_text())
    assert report["original_pckh"] is not None
    assert all(p["pckh"] is not None for p in report["sweep"])
    assert (out / "analysis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
