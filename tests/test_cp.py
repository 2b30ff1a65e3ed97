"""CP T-Nets: CP-ALS, the separable factorized forward, save/load, ONNX export."""

import pytest
import torch

import tcompress
from tcompress.decompose.cp import cp_als, cp_to_tensor
from tcompress.errors import RankError

from .conftest import make_hourglass, outputs, scaled_error


def planted(shape, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    factors = [torch.randn(d, rank, generator=g, dtype=torch.float64) for d in shape]
    return factors, torch.einsum(
        ",".join(f"{chr(97 + k)}r" for k in range(len(shape)))
        + "->"
        + "".join(chr(97 + k) for k in range(len(shape))),
        *factors,
    )


def test_cp_to_tensor_is_the_sum_of_rank_one_terms():
    factors, W = planted((3, 4, 2, 5), 3)
    assert torch.allclose(cp_to_tensor(torch.ones(3, dtype=torch.float64), factors), W)


def test_planted_cp_tensor_is_recovered_exactly():
    _, W = planted((4, 5, 6, 3), 3)
    result = cp_als(W, 3, n_iter=300, tol=0)
    rebuilt = cp_to_tensor(result.weights, result.factors)
    assert (rebuilt - W).norm() / W.norm() < 1e-8
    assert result.relative_error < 1e-8


def test_als_error_does_not_increase():
    W = torch.randn(4, 4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    errors = cp_als(W, 8, n_iter=15, tol=0).errors
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:]))
    assert len(errors) == 15


def test_cp_tnet_forms_agree_and_survive_save_load(tmp_path, x):
    hg = make_hourglass(features=16)
    tnet = tcompress.convert(hg, method="cp", ranks=48)
    assert tnet.method == "cp" and tnet.ranks == (48,)
    s = tnet.summary
    assert s["params_after"] == sum(p.numel() for p in tnet.parameters())
    assert s["tensor_params_after"] == 48 * (1 + sum(s["mode_sizes"]))
    reconstructed = outputs(tnet.set_forward("reconstructed").eval(), x)
    factorized = outputs(tnet.set_forward("factorized"), x)
    assert scaled_error(factorized, reconstructed) < 1e-5
    tcompress.save(tnet, tmp_path / "cp.pt")
    loaded = tcompress.load(tmp_path / "cp.pt", forward="reconstructed").eval()
    assert loaded.method == "cp"
    assert scaled_error(outputs(loaded, x), reconstructed) == 0


def test_cp_is_trainable(x):
    tnet = tcompress.convert(
        make_hourglass(features=8), method="cp", ranks=16, forward="factorized"
    )
    loss = sum(o.square().mean() for o in tnet.train()(x))
    loss.backward()
    assert all(p.grad is not None for p in tnet.tensor.parameters())


@pytest.mark.parametrize("form", ["factorized", "dense"])
def test_cp_exports_to_onnx(tmp_path, form):
    from tcompress.export.onnx import export_onnx

    tnet = tcompress.convert(make_hourglass(features=8), method="cp", ranks=16)
    export_onnx(tnet, tmp_path / "cp.onnx", form, input_size=32)  # validated in ONNX Runtime
    assert (tmp_path / "cp.onnx").exists()


def test_cp_ratio_and_rank_errors():
    hg = make_hourglass(features=16)
    s = tcompress.convert(hg, method="cp", ratio=2.0).summary
    assert 2.0 <= s["compression_ratio"] <= 2.06 and s["predicted_error"] is None
    with pytest.raises(RankError, match="CP needs one rank, the number of rank-one terms"):
        tcompress.convert(hg, method="cp", ranks="full")
    with pytest.raises(
        RankError, match=r"an energy target needs a method with an error bound \(tucker or mps\)"
    ):
        tcompress.convert(hg, method="cp", energy=0.9)
