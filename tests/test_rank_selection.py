"""Ranks chosen from a compression-ratio or energy target."""

import pytest
import torch

import tcompress
from tcompress import methods
from tcompress.decompose import tucker_to_tensor
from tcompress.decompose.spectra import mode_spectra
from tcompress.errors import RankError
from tcompress.methods.selection import allocate

from .conftest import make_hourglass


@pytest.mark.parametrize("method", ["tucker", "mps"])
@pytest.mark.parametrize("features, ratio", [(16, 1.5), (16, 2.0), (16, 3.0), (32, 4.0)])
def test_ratio_target_is_met_within_3_percent(method, features, ratio):
    hg = make_hourglass(features=features)
    tnet = tcompress.convert(hg, method=method, ratio=ratio)
    s = tnet.summary
    assert ratio <= s["compression_ratio"] <= ratio * 1.03
    assert s["target"] == f"ratio {ratio:g}"
    assert s["relative_error"] <= s["predicted_error"] + 1e-5  # the bound holds


@pytest.mark.parametrize("method", ["tucker", "mps"])
def test_energy_is_monotone(method):
    hg = make_hourglass(features=16)
    params, errors = [], []
    for energy in (0.5, 0.8, 0.95, 0.99):
        s = tcompress.convert(hg, method=method, energy=energy).summary
        assert s["predicted_error"] <= (1 - energy) ** 0.5 + 1e-9
        params.append(s["params_after"])
        errors.append(s["relative_error"])
    assert params == sorted(params) and errors == sorted(errors, reverse=True)


def test_given_ranks_stay_fixed():
    hg = make_hourglass(features=16)
    s = tcompress.convert(hg, ranks="stack=1,h=2", ratio=2.0).summary
    assert s["ranks"][0] == 1 and s["ranks"][6] == 2
    assert 2.0 <= s["compression_ratio"] <= 2.06


def test_out_of_reach_targets_are_refused():
    hg = make_hourglass(features=8)
    with pytest.raises(RankError, match=r"compression ratio 0.5 is out of reach: with tucker"):
        tcompress.convert(hg, ratio=0.5)
    with pytest.raises(RankError, match=r"compression ratio 1000 is out of reach"):
        tcompress.convert(hg, method="mps", ratio=1000)
    with pytest.raises(RankError, match=r"energy fraction 1.5 is out of range"):
        tcompress.convert(hg, energy=1.5)


def test_planted_low_rank_tensor_is_found_exactly():
    g = torch.Generator().manual_seed(0)
    core = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    factors = [
        torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))[0]
        for n, r in ((6, 2), (7, 3), (5, 2))
    ]
    W = tucker_to_tensor(core, factors)
    choice = allocate(methods.get("tucker"), W.shape, mode_spectra(W), energy=1 - 1e-12)
    assert choice.ranks == (2, 3, 2)
    assert choice.predicted_error < 1e-6


def test_a_coarse_network_never_falls_short_of_the_target():
    # 8 features: most parameters lie outside W and single rank steps are coarse
    s = tcompress.convert(make_hourglass(features=8), ratio=1.5).summary
    assert s["compression_ratio"] >= 1.5


def test_cli_ratio_and_energy(tmp_path, checkpoint):
    import json

    from click.testing import CliRunner

    from tcompress.cli import main

    r = CliRunner().invoke(
        main, ["convert", checkpoint, "--ratio", "1.5", "-o", str(tmp_path / "t.pt"), "--json"]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["target"] == "ratio 1.5" and summary["predicted_error"] >= 0
    r = CliRunner().invoke(
        main,
        ["convert", checkpoint, "--ratio", "2", "--energy", "0.9", "-o", str(tmp_path / "u.pt")],
    )
    assert r.exit_code == 2 and "Error: give --ratio or --energy, not both" in r.output
    assert not (tmp_path / "u.pt").exists()
    r = CliRunner().invoke(main, ["convert", checkpoint, "--ratio", "2"])
    assert r.exit_code == 0 and "ranks chosen for ratio 2:" in r.output
