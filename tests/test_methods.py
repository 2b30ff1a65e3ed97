"""Every registered method, through the same checks: exact at full rank (both forward forms),
saved and loaded unchanged, exported and validated in ONNX Runtime; and the registry itself."""

import os

import pytest
import torch

import tcompress
from tcompress import methods
from tcompress.errors import MethodError, RankError, TcompressError
from tcompress.export.onnx import export_onnx
from tcompress.methods.base import LayerMethod, SharedTensor, TensorMethod

from .conftest import make_hourglass, outputs

#: Ranks below full for every method, on the small hourglass (W: 2,2,2,2,8,8,3,3; kernels 8x8x3x3).
SMALL_RANKS = {
    "tucker": "1,2,2,1,4,5,2,3",
    "mps": "2,3,6,8,6,5,3",
    "cp": "8",
    "tr": "2,3,6,8,6,5,3,1",
    "layerwise-tucker": "4,5",
    "layerwise-cp": "6",
    "tai": "5",
}
#: CP has no full rank: an exact CP rank of W is not known (and ALS would not reach it).
EXACT = [name for name in methods.names() if name != "cp"]


def scaled_error(got, want) -> float:
    return max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got, want))


def test_every_registered_method_is_complete():
    assert set(SMALL_RANKS) == set(methods.names())
    for name in methods.names():
        method = methods.get(name)
        assert method.name == name and method.kind == methods.kind(name)
        assert method.title and method.rank_help
        base = TensorMethod if method.kind == methods.TNET else LayerMethod
        assert isinstance(method, base)
        if method.kind == methods.TNET:
            assert issubclass(method.tensor_type, SharedTensor)
            assert method.tensor_type.method == name


def test_an_unknown_name_fails_at_lookup_listing_the_registered_ones():
    expected = f"^method 'svd-magic' is unknown; expected one of {', '.join(methods.names())}$"
    with pytest.raises(MethodError, match=expected):
        methods.get("svd-magic")
    with pytest.raises(MethodError, match=expected):
        tcompress.convert(make_hourglass(), method="svd-magic")
    assert methods.check("TR") == "tr"


@pytest.mark.parametrize("name", EXACT)
def test_full_rank_is_exact_in_every_form(name):
    hourglass = make_hourglass().eval()
    model = tcompress.convert(hourglass, method=name, ranks="full").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    want = outputs(hourglass, x)
    for form in ("reconstructed", "factorized") if hasattr(model, "set_forward") else ("-",):
        if form != "-":
            model.set_forward(form)
        assert scaled_error(outputs(model, x), want) < 1e-5, form
    assert model.summary["relative_error"] < 1e-5


@pytest.mark.parametrize("name", methods.names())
def test_save_load_and_export(tmp_path, name):
    hourglass = make_hourglass()
    model = tcompress.convert(hourglass, method=name, ranks=SMALL_RANKS[name]).eval()
    path = tmp_path / "m.pt"
    tcompress.save(model, path)
    loaded = tcompress.load(path).eval()
    assert type(loaded) is type(model) and loaded.method == name
    assert tuple(loaded.ranks) == tuple(model.ranks)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for got, want in zip(outputs(loaded, x), outputs(model, x)):
        assert torch.equal(got, want)
    if hasattr(model, "set_forward"):  # the two forward forms compute the same network
        a = outputs(model.set_forward("reconstructed"), x)
        assert scaled_error(outputs(model.set_forward("factorized"), x), a) < 1e-5
    report = export_onnx(loaded, tmp_path / "m.onnx", "factorized", input_size=32)
    assert report.validation.ok and report.validation.checker == "passed"


@pytest.mark.parametrize("name", methods.names(methods.TNET))
def test_a_file_whose_ranks_do_not_fit_its_method_is_refused(tmp_path, name):
    model = tcompress.convert(make_hourglass(), method=name, ranks=SMALL_RANKS[name])
    payload = tcompress.serialize.to_payload(model)
    payload["ranks"] = [*payload["ranks"], 3]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(TcompressError, match=f"do not fit method '{name}'"):
        tcompress.load(tmp_path / "bad.pt")


def test_tensor_ring_ratio_is_the_train_with_ring_bond_one():
    hourglass = make_hourglass()
    ring = tcompress.convert(hourglass, method="tr", ratio=2)
    train = tcompress.convert(hourglass, method="mps", ratio=2)
    assert ring.summary["ranks"] == [*train.summary["ranks"], 1]
    assert ring.summary["compression_ratio"] == pytest.approx(train.summary["compression_ratio"])
    assert torch.allclose(ring.full_tensor(), train.full_tensor(), atol=1e-6)


def test_tensor_ring_with_a_ring_bond_runs_both_forms_alike():
    # The stack mode (size 2) opens the ring: it holds ring bond 2 x bond 1 = 2.
    model = tcompress.convert(make_hourglass(), method="tr", ranks="1,2,4,8,6,5,3,2").eval()
    assert model.ranks == (1, 2, 4, 8, 6, 5, 3, 2)
    assert model.summary["notes"] == []
    assert model.tensor.cores[0].shape == (2, 2, 1) and model.tensor.cores[-1].shape == (3, 3, 2)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    a = outputs(model.set_forward("reconstructed"), x)
    assert scaled_error(outputs(model.set_forward("factorized"), x), a) < 1e-5
    first, shared, _ = model.factorized_weights()
    assert first((0, 0, 0, 0)).shape == (2 * 6, 8, 1, 1)  # R_N R5 channels per layer
    assert shared((0, 0, 0, 0)).shape == (8, 2 * 6, 3, 3)


@pytest.mark.parametrize(
    "ranks, message",
    [
        ("1,2,3", "got 3 tensor-ring bond rank(s) ('1,2,3'); expected 8 bond ranks"),
        ("f_in=4", "named modes apply to Tucker only"),
        ("1,2,0,8,6,5,3,2", "tensor-ring bond rank 3 is 0; expected an integer at least 1"),
        ("8", "cannot open the ring at any mode"),
    ],
)
def test_tensor_ring_rank_errors(ranks, message):
    with pytest.raises(RankError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tcompress.convert(make_hourglass(), method="tr", ranks=ranks)


def test_tensor_ring_refuses_refine_and_caps_with_a_note():
    with pytest.raises(TcompressError, match=r"refine=1 does not apply to tr \(TR-SVD has no"):
        tcompress.convert(make_hourglass(), method="tr", refine=1)
    capped = tcompress.convert(make_hourglass(), method="tr", ranks="1,8,4,8,6,5,3,2")
    assert capped.ranks[1] == 2
    assert capped.summary["notes"] == ["bond 2: 8 capped at 2 (bond 1 x 2)"]


FORMAT_V1 = os.path.join(os.path.dirname(__file__), "fixtures", "format-v1")


@pytest.mark.parametrize("name", ["tucker", "mps", "cp", "layerwise-tucker", "layerwise-cp", "tai"])
def test_files_written_before_the_registry_load_unchanged(name):
    model = tcompress.load(os.path.join(FORMAT_V1, f"{name}.pt")).eval()
    assert model.method == name
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    want = torch.load(os.path.join(FORMAT_V1, f"{name}.out.pt"), weights_only=True)
    with torch.no_grad():
        # The weights load as written; the forward pass is compared to float32 rounding, since
        # CPUs of other instruction sets (AVX2, AVX512) sum the convolutions in other orders.
        torch.testing.assert_close(model(x)[-1], want, rtol=1e-5, atol=1e-6)
