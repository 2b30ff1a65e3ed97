"""The converted Tucker T-Net's scale: factors sqrt(D/R) times orthonormal, the core at W's."""

import json

import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.serialize import load

from .conftest import outputs

RANKS = (2, 1, 3, 2, 5, 6, 2, 3)  # modes 1, 4, 5, 6 truncated; 0, 2, 3, 7 kept whole


def _converted(hg, balance, ranks=RANKS, method="tucker"):
    return tcompress.convert(hg, method=method, ranks=ranks, balance=balance)


@torch.no_grad()
def test_the_balanced_tensor_rebuilds_the_same_w_with_the_core_at_its_scale(hourglass, x):
    plain, balanced = _converted(hourglass, False), _converted(hourglass, True)
    assert balanced.summary["balanced"] is True and plain.summary["balanced"] is False
    W_plain, W = plain.tensor.full(), balanced.tensor.full()
    assert float((W - W_plain).norm() / W_plain.norm()) < 1e-6
    assert balanced.summary["relative_error"] == plain.summary["relative_error"]
    rms = W.pow(2).mean().sqrt()
    assert float(balanced.tensor.core.pow(2).mean().sqrt()) == pytest.approx(float(rms), rel=1e-5)
    assert float(plain.tensor.core.pow(2).mean().sqrt()) > 1.5 * float(rms)
    shape = tuple(u.shape[0] for u in balanced.tensor.factors)
    for k, (u, v) in enumerate(zip(balanced.tensor.factors, plain.tensor.factors)):
        if RANKS[k] == shape[k]:
            assert torch.equal(u, v)  # a mode kept whole is not rescaled
        else:  # rows of unit mean squared norm, columns still orthogonal
            assert float(u.pow(2).sum(1).mean()) == pytest.approx(1.0, rel=1e-5)
            gram = u.T @ u
            assert torch.allclose(gram, torch.eye(RANKS[k]) * shape[k] / RANKS[k], atol=1e-5)
    for a, b in zip(outputs(balanced.eval(), x), outputs(plain.eval(), x)):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5


def test_full_rank_and_the_other_methods_are_left_as_they_are(hourglass, x):
    full = _converted(hourglass, True, ranks="full")
    assert full.summary["balanced"] is False
    exact = _converted(hourglass, False, ranks="full")
    for key, value in full.state_dict().items():
        assert torch.equal(value, exact.state_dict()[key]), key
    for method, ranks in (("mps", (2, 4, 12, 24, 16, 6, 3)), ("cp", (20,))):
        a = _converted(hourglass, True, ranks, method)
        b = _converted(hourglass, False, ranks, method)
        assert a.summary["balanced"] is False
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_cli_convert_balances_unless_told_orthonormal(tmp_path, checkpoint):
    ranks = ",".join(map(str, RANKS))
    for flags, balanced in (([], True), (["--orthonormal"], False)):
        out = tmp_path / f"t{len(flags)}.pt"
        args = ["convert", checkpoint, "--ranks", ranks, "-o", str(out), "--json", *flags]
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["balanced"] is balanced
        u = load(out).tensor.factors[4].detach()  # f_in, 8 -> 5
        assert float(u.pow(2).sum()) == pytest.approx(8.0 if balanced else 5.0, rel=1e-5)
