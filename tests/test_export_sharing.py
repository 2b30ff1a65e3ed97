"""Factorized exports store every shared factor once, and validation catches a fold without eps.

The ONNX file of a factorized T-Net holds exactly the float parameters of the PyTorch model it
runs: every factor that the layers share (Tucker's U5^T and U6, MPS's and the tensor ring's h x w
kernel, CP's U5^T and its two depthwise kernels) is one initializer used by every block
convolution, and a BatchNorm after a shared convolution is a per-channel scale and shift
(``ChannelAffine``) instead of a per-layer copy of the factor.
"""

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import tcompress
import tcompress.passes.fold_bn as fold_bn
from tcompress.export.onnx import ExportError, export_onnx
from tcompress.passes import ChannelAffine, factorize

from .conftest import make_hourglass

#: export_onnx's default float32 tolerances (tcompress.vocabulary.FP32_ATOL, FP32_RTOL), spelled
#: out so that a change of the defaults cannot weaken these tests unseen.
ATOL, RTOL = 1e-6, 1e-5


def test_the_defaults_are_these_tolerances():
    from tcompress.vocabulary import FP32_ATOL, FP32_RTOL

    assert (FP32_ATOL, FP32_RTOL) == (ATOL, RTOL)


#: Ranks of the small hourglass (W: 2,2,3,2,8,8,3,3). Tucker and MPS keep the grid and spatial
#: modes whole, so the per-layer weights of the factorized form hold no more entries than the
#: tensor; the ring has a ring bond of 2 (R8 * R5 = 12 channels between its two convolutions).
RANKS = {
    "tucker": "2,2,3,2,3,5,3,3",
    "mps": "2,4,12,24,6,9,3",
    "cp": "6",
    "tr": "1,2,4,8,6,5,3,2",
}
N_LAYERS = 24  # 2 stacks x 2 levels x 3 pathways x 2 convolutions
F = 8  # features of the small hourglass


def _export(tmp_path, method):
    tnet = tcompress.convert(make_hourglass(), method=method, ranks=RANKS[method]).eval()
    path = tmp_path / f"{method}.onnx"
    report = export_onnx(tnet, path, "factorized", input_size=32, atol=ATOL, rtol=RTOL)
    assert report.validation.ok
    return tnet, onnx.load(path), report


def _conv_uses(model) -> Counter:
    """How many Conv nodes use each initializer as their weight."""
    return Counter(n.input[1] for n in model.graph.node if n.op_type == "Conv")


def _float_entries(model) -> int:
    return sum(
        int(np.prod(i.dims))
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT
    )


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {i.name: tuple(i.dims) for i in model.graph.initializer}


#: Per method, the shapes of the weights every block convolution shares.
SHARED = {
    "tucker": [(3, F, 1, 1), (F, 5, 1, 1)],  # U5^T, U6 (R5 = 3: no other weight has its shape)
    "mps": [(F, 6, 3, 3)],  # the right cores G6 G7 G8
    "cp": [(6, 1, 1, 3), (6, 1, 3, 1), (6, F, 1, 1)],  # U8, U7 (depthwise), U5^T
    "tr": [(F, 2 * 6, 3, 3)],  # the right cores, ring bond open: R8 * R5 inputs
}


@pytest.mark.parametrize("method", list(RANKS))
def test_every_shared_factor_is_one_initializer(tmp_path, method):
    _, model, _ = _export(tmp_path, method)
    shapes, uses = _shapes(model), _conv_uses(model)
    shared = sorted(shapes[name] for name, n in uses.items() if n > 1)
    assert shared == sorted(SHARED[method])
    for name, n in uses.items():
        if n > 1:
            assert n == N_LAYERS, (name, n)  # one initializer serves every block convolution
    # No per-layer copy of a shared factor anywhere (a BatchNorm folded into one would be one).
    counts = Counter(shapes.values())
    assert all(counts[s] == 1 for s in SHARED[method])


def _factorized_block_entries(method: str) -> int:
    """Entries of the block weights in the factorized form, each shared weight once
    (docs/design.md, "The factorized form"; h = w = 3)."""
    if method == "tucker":  # U5^T, U6 shared; per-layer cores R6 x R5 x h x w
        r5, r6 = 3, 5
        return F * r5 + N_LAYERS * r6 * r5 * 9 + r6 * F
    if method == "mps":  # per-layer 1x1 f_in -> R5; shared h x w R5 -> f_out
        r5 = 6
        return N_LAYERS * r5 * F + F * r5 * 9
    if method == "cp":  # U5^T, U7, U8 shared; per layer U6 scaled by the layer's weights
        r = 6
        return F * r + 3 * r + 3 * r + N_LAYERS * F * r
    r8, r5 = 2, 6  # tensor ring: per-layer 1x1 f_in -> R8 R5; shared h x w R8 R5 -> f_out
    return N_LAYERS * r8 * r5 * F + F * r8 * r5 * 9


@pytest.mark.parametrize("method", list(RANKS))
def test_onnx_parameters_are_the_pytorch_parameters_less_the_folds(tmp_path, method):
    """Float entries of the ONNX initializers = the T-Net's PyTorch parameters (running statistics
    are buffers, counted in no ratio), with the tensor replaced by the factorized form's block
    weights and less what folding removes:

    - the factorized form (closed form above) contracts the small factors into per-layer
      weights. Tucker's U1..U4, U7, U8 enter the per-layer cores, which at full grid and spatial
      ranks hold exactly the core's entries; MPS's G1..G4 the per-layer 1x1 (as many entries as G5
      when bond 4 is the whole grid) and G7, G8 the shared kernel (as many as G6): both *below* the
      tensor. CP stores U6 once per layer, scaled by the layer's weights, and a ring with a bond
      R8 > 1 a per-layer 1x1 of f_in x R8 R5: both *above* it, by the form itself (no factor the
      layers share is repeated);
    - a BatchNorm folded into a per-layer convolution without a bias gives up its weight and bias
      (2C) for the convolution's new bias (C): C fewer. A BatchNorm after a shared convolution
      becomes a ChannelAffine, whose scale and shift are its weight and bias: none fewer.

    Margin: the exporter adds no float initializer of its own (the Resize scales are Constant
    nodes), so the counts agree exactly; allowed: 4 floats per Resize, should a torch release
    write those scales as initializers.
    """
    tnet, model, report = _export(tmp_path, method)
    plain = factorize(tnet).eval()
    norms = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    affines = [m for m in fold_bn.fold_batchnorm(plain).modules() if isinstance(m, ChannelAffine)]
    folded = sum(bn.num_features for bn in norms) - sum(a.scale.numel() for a in affines)
    tnet_params = sum(p.numel() for p in tnet.parameters())
    tensor_params = sum(p.numel() for p in tnet.tensor.parameters())
    blocks = _factorized_block_entries(method)
    expected = tnet_params - tensor_params + blocks - folded
    margin = 4 * sum(n.op_type == "Resize" for n in model.graph.node)
    exported = _float_entries(model)
    assert expected <= exported <= expected + margin
    assert report.params == exported  # the report's count is the file's
    # Every block BatchNorm follows a shared weight (Tucker's U6, the MPS and ring kernels) and is
    # a ChannelAffine, or a per-layer 1x1 (CP) and is folded; every other BatchNorm is folded.
    assert len(affines) == (0 if method == "cp" else N_LAYERS)
    if method in ("tucker", "mps"):
        assert blocks <= tensor_params and exported < tnet_params
    else:
        assert blocks > tensor_params
    if method == "tucker":
        # The T-Net less U1..U4, U7, U8 and one bias-free fold per channel of every BatchNorm
        # outside the blocks (stem, innermost blocks, heads).
        small = sum(u.numel() for k, u in enumerate(tnet.tensor.factors) if k not in (4, 5))
        assert exported == tnet_params - small - folded


def _realistic_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running variances of 1e-3..1e-2 (log-uniform), as trained networks have, with BatchNorm
    weights of sqrt(var) * U(0.5, 1.5), so that each BatchNorm still scales by 0.5..1.5 and the
    activations keep their size. There eps = 1e-5 changes a scale by eps / (2 var), 0.05..0.5%,
    against < 1e-5 with the variances near 1 of ``random_hourglass``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                var = 10 ** (torch.rand(m.num_features, generator=g) - 3)
                m.running_var.copy_(var)
                m.weight.copy_(var.sqrt() * (torch.rand(m.num_features, generator=g) + 0.5))
    return model


def _scale_shift_without_eps(bn: nn.BatchNorm2d):
    scale = bn.weight * torch.rsqrt(bn.running_var)  # the bug: eps left out
    return scale, bn.bias - scale * bn.running_mean


@pytest.mark.parametrize(
    "method, form", [(None, "dense"), ("tucker", "factorized"), ("mps", "factorized")]
)
@pytest.mark.parametrize("variances", ["near 1", "1e-3..1e-2"])
def test_a_batchnorm_fold_that_drops_eps_fails_validation(
    tmp_path, monkeypatch, method, form, variances
):
    """Also with running variances near 1 (``random_hourglass``'s), where leaving out eps = 1e-5
    moves each scale by less than 1e-5 and the old tolerance (1e-4 + 1e-4) passed it."""
    hourglass = make_hourglass()
    if variances != "near 1":
        hourglass = _realistic_statistics(hourglass)
    model = hourglass
    if method is not None:
        model = tcompress.convert(hourglass, method=method, ranks=RANKS[method]).eval()
    # The correct fold passes at the default tolerances...
    good = export_onnx(model, tmp_path / "good.onnx", form, input_size=32)
    assert good.validation.ok
    # ...one without eps (folded convolutions and ChannelAffines alike) does not.
    monkeypatch.setattr(fold_bn, "_scale_shift", _scale_shift_without_eps)
    with pytest.raises(ExportError, match="failed validation"):
        export_onnx(model, tmp_path / "bad.onnx", form, input_size=32)
    assert not (tmp_path / "bad.onnx").exists()


class _Cancelling(torch.nn.Module):
    """Two large convolutions whose difference is the output: float32 rounds the difference at
    the scale of the terms, far above ``rtol * max |output|``."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.b = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            base = 1e4 * torch.randn(4, 3, 3, 3, generator=g)
            self.a.weight.copy_(base + torch.randn(4, 3, 3, 3, generator=g))
            self.b.weight.copy_(base)

    def forward(self, x):
        return self.a(x) - self.b(x)


def test_validation_allows_the_references_own_float32_rounding(tmp_path):
    from tcompress.export.validate import validate_onnx

    model = _Cancelling().eval()
    path = str(tmp_path / "c.onnx")
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 8, 8),),
        path,
        input_names=["image"],
        output_names=["output"],
        dynamic_axes={"image": {0: "batch"}},
        dynamo=False,
    )
    report = validate_onnx(path, model, input_size=(8, 8))
    assert report.ok, report.problems
    for check in report.outputs:
        plain = 1e-6 + 1e-5 * check.max_abs_diff / check.max_rel_diff
        # The rounding of terms of size 1e4 is far above the plain tolerance, which failed such
        # a file; the check allows twice the reference's own rounding on top of it.
        assert check.max_abs_diff > plain
        assert check.tolerance > 10 * plain
