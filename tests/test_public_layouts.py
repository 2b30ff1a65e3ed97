"""The public hourglass layouts (bearpaw/pytorch-pose ``hg``, princeton-vl ``PoseNet``).

The reference here is independent of tcompress's models: the key sets and shapes the public code
produces are enumerated from a configuration, and the forward passes are written as functions of
the state_dict alone (``F.conv2d``, ``F.batch_norm``), following the public code's structure.
"""

import math

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

import tcompress
from tcompress.errors import CheckpointError
from tcompress.export.onnx import export_onnx
from tcompress.layouts import dense_from_state
from tcompress.models import BearpawHourglass, PoseNet

EXACT = 1e-5  # max |T-Net - public| / max |public| at full rank, float32


# -- key sets and shapes, as the public code creates them ------------------------------------------
def _bn(keys, prefix, c):
    for name in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{prefix}.{name}"] = (c,)
    keys[f"{prefix}.num_batches_tracked"] = ()


def _conv(keys, prefix, c_out, c_in, k):
    keys[f"{prefix}.weight"] = (c_out, c_in, k, k)
    keys[f"{prefix}.bias"] = (c_out,)


def bearpaw_keys(stacks, blocks, joints=16, feats=4, inplanes=4, depth=4):
    """Keys of bearpaw's HourglassNet(Bottleneck, stacks, blocks, joints) with num_feats=feats
    (public: 128) and inplanes (public: 64)."""
    keys = {}

    def bottleneck(prefix, c_in, planes):
        _bn(keys, f"{prefix}.bn1", c_in)
        _conv(keys, f"{prefix}.conv1", planes, c_in, 1)
        _bn(keys, f"{prefix}.bn2", planes)
        _conv(keys, f"{prefix}.conv2", planes, planes, 3)
        _bn(keys, f"{prefix}.bn3", planes)
        _conv(keys, f"{prefix}.conv3", 2 * planes, planes, 1)
        if c_in != 2 * planes:
            _conv(keys, f"{prefix}.downsample.0", 2 * planes, c_in, 1)

    ch = 2 * feats
    _conv(keys, "conv1", inplanes, 3, 7)
    _bn(keys, "bn1", inplanes)
    bottleneck("layer1.0", inplanes, inplanes)
    bottleneck("layer2.0", 2 * inplanes, inplanes)
    bottleneck("layer3.0", 2 * inplanes, feats)
    for s in range(stacks):
        for i in range(depth):
            for j in range(4 if i == 0 else 3):
                for b in range(blocks):
                    bottleneck(f"hg.{s}.hg.{i}.{j}.{b}", ch, feats)
        for b in range(blocks):
            bottleneck(f"res.{s}.{b}", ch, feats)
        _conv(keys, f"fc.{s}.0", ch, ch, 1)
        _bn(keys, f"fc.{s}.1", ch)
        _conv(keys, f"score.{s}", joints, ch, 1)
        if s < stacks - 1:
            _conv(keys, f"fc_.{s}", ch, ch, 1)
            _conv(keys, f"score_.{s}", ch, joints, 1)
    return keys


def posenet_keys(stacks, inp_dim=8, oup_dim=16, depth=4, stem=4, width=8):
    """Keys of princeton-vl's PoseNet(stacks, inp_dim, oup_dim) with the stem's 64 and 128
    channels as ``stem`` and ``width``."""
    keys = {}

    def residual(prefix, c_in, c_out):
        mid = c_out // 2
        _bn(keys, f"{prefix}.bn1", c_in)
        _conv(keys, f"{prefix}.conv1.conv", mid, c_in, 1)
        _bn(keys, f"{prefix}.bn2", mid)
        _conv(keys, f"{prefix}.conv2.conv", mid, mid, 3)
        _bn(keys, f"{prefix}.bn3", mid)
        _conv(keys, f"{prefix}.conv3.conv", c_out, mid, 1)
        _conv(keys, f"{prefix}.skip_layer.conv", c_out, c_in, 1)

    def hourglass(prefix, n, f):
        residual(f"{prefix}.up1", f, f)
        residual(f"{prefix}.low1", f, f)
        if n > 1:
            hourglass(f"{prefix}.low2", n - 1, f)
        else:
            residual(f"{prefix}.low2", f, f)
        residual(f"{prefix}.low3", f, f)

    _conv(keys, "pre.0.conv", stem, 3, 7)
    _bn(keys, "pre.0.bn", stem)
    residual("pre.1", stem, width)
    residual("pre.3", width, width)
    residual("pre.4", width, inp_dim)
    for s in range(stacks):
        hourglass(f"hgs.{s}.0", depth, inp_dim)
        residual(f"features.{s}.0", inp_dim, inp_dim)
        _conv(keys, f"features.{s}.1.conv", inp_dim, inp_dim, 1)
        _bn(keys, f"features.{s}.1.bn", inp_dim)
        _conv(keys, f"outs.{s}.conv", oup_dim, inp_dim, 1)
        if s < stacks - 1:
            _conv(keys, f"merge_features.{s}.conv.conv", inp_dim, inp_dim, 1)
            _conv(keys, f"merge_preds.{s}.conv.conv", inp_dim, oup_dim, 1)
    return keys


def random_state(keys, seed=0):
    """Trained-looking values: scaled kernels, small biases, BatchNorms away from identity."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var") or (key.endswith("weight") and len(shape) == 1):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 4:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


# -- the public forward passes, as functions of the state_dict -------------------------------------
def _bn_f(st, p, x):
    w, b, m, v = (st[f"{p}.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
    return F.batch_norm(x, m, v, w, b, False, 0.0, 1e-5)


def _conv_f(st, p, x, stride=1):
    w = st[f"{p}.weight"]
    return F.conv2d(x, w, st[f"{p}.bias"], stride, (w.shape[-1] - 1) // 2)


def bearpaw_forward(st, x, stacks, blocks, depth=4):
    def bottleneck(p, x):
        out = _conv_f(st, f"{p}.conv1", F.relu(_bn_f(st, f"{p}.bn1", x)))
        out = _conv_f(st, f"{p}.conv2", F.relu(_bn_f(st, f"{p}.bn2", out)))
        out = _conv_f(st, f"{p}.conv3", F.relu(_bn_f(st, f"{p}.bn3", out)))
        shortcut = _conv_f(st, f"{p}.downsample.0", x) if f"{p}.downsample.0.weight" in st else x
        return out + shortcut

    def residual(p, x, n):
        for b in range(n):
            x = bottleneck(f"{p}.{b}", x)
        return x

    def hg(s, n, x):
        up1 = residual(f"hg.{s}.hg.{n - 1}.0", x, blocks)
        low1 = residual(f"hg.{s}.hg.{n - 1}.1", F.max_pool2d(x, 2, 2), blocks)
        low2 = hg(s, n - 1, low1) if n > 1 else residual(f"hg.{s}.hg.0.3", low1, blocks)
        low3 = residual(f"hg.{s}.hg.{n - 1}.2", low2, blocks)
        return up1 + F.interpolate(low3, scale_factor=2, mode="nearest")

    x = F.relu(_bn_f(st, "bn1", F.conv2d(x, st["conv1.weight"], st["conv1.bias"], 2, 3)))
    x = residual("layer1", x, 1)
    x = residual("layer3", residual("layer2", F.max_pool2d(x, 2, 2), 1), 1)
    out = []
    for s in range(stacks):
        y = residual(f"res.{s}", hg(s, depth, x), blocks)
        y = F.relu(_bn_f(st, f"fc.{s}.1", _conv_f(st, f"fc.{s}.0", y)))
        score = _conv_f(st, f"score.{s}", y)
        out.append(score)
        if s < stacks - 1:
            x = x + _conv_f(st, f"fc_.{s}", y) + _conv_f(st, f"score_.{s}", score)
    return out


def posenet_forward(st, imgs, stacks, depth=4):
    def residual(p, x):
        out = _conv_f(st, f"{p}.conv1.conv", F.relu(_bn_f(st, f"{p}.bn1", x)))
        out = _conv_f(st, f"{p}.conv2.conv", F.relu(_bn_f(st, f"{p}.bn2", out)))
        out = _conv_f(st, f"{p}.conv3.conv", F.relu(_bn_f(st, f"{p}.bn3", out)))
        same = st[f"{p}.conv3.conv.weight"].shape[0] == st[f"{p}.bn1.weight"].shape[0]
        return out + (x if same else _conv_f(st, f"{p}.skip_layer.conv", x))

    def hourglass(p, n, x):
        up1 = residual(f"{p}.up1", x)
        low1 = residual(f"{p}.low1", F.max_pool2d(x, 2, 2))
        low2 = hourglass(f"{p}.low2", n - 1, low1) if n > 1 else residual(f"{p}.low2", low1)
        return up1 + F.interpolate(residual(f"{p}.low3", low2), scale_factor=2, mode="nearest")

    x = imgs.permute(0, 3, 1, 2)
    x = F.relu(_bn_f(st, "pre.0.bn", _conv_f(st, "pre.0.conv", x, stride=2)))
    x = residual("pre.1", x)
    x = residual("pre.4", residual("pre.3", F.max_pool2d(x, 2, 2)))
    preds = []
    for s in range(stacks):
        feature = residual(f"features.{s}.0", hourglass(f"hgs.{s}.0", depth, x))
        p = f"features.{s}.1"
        feature = F.relu(_bn_f(st, f"{p}.bn", _conv_f(st, f"{p}.conv", feature)))
        preds.append(_conv_f(st, f"outs.{s}.conv", feature))
        if s < stacks - 1:
            x = x + _conv_f(st, f"merge_preds.{s}.conv.conv", preds[-1])
            x = x + _conv_f(st, f"merge_features.{s}.conv.conv", feature)
    return torch.stack(preds, 1)


def scaled_error(got, want):
    got = got if isinstance(got, list | tuple) else [got]
    want = want if isinstance(want, list | tuple) else [want]
    assert len(got) == len(want)
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, want))


BEARPAW = {1: 2, 2: 1, 8: 1}
STACKS = [
    1,
    2,
    pytest.param(8, marks=pytest.mark.slow),
]  # 8 stacks: about 10 s a test  # stacks -> blocks per residual (public hg1 uses 8, hg8 uses 1)


def bearpaw_case(stacks, seed=0):
    blocks = BEARPAW[stacks]
    state = random_state(bearpaw_keys(stacks, blocks), seed)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        want = bearpaw_forward(state, x, stacks, blocks)
    return state, x, want


def posenet_case(stacks, seed=0):
    state = random_state(posenet_keys(stacks), seed)
    x = torch.randn(2, 64, 64, 3, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        want = posenet_forward(state, x, stacks)
    return state, x, want


def wrapped_bearpaw(state):
    """As bearpaw's training script saves it: DataParallel's prefix, inside a dict."""
    return {
        "epoch": 3,
        "arch": "hg",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "best_acc": torch.tensor(0.5),
        "optimizer": {"state": {}, "param_groups": [{"lr": 2.5e-4, "params": [0, 1]}]},
    }


def wrapped_posenet(state):
    """As princeton-vl's training script saves it: Trainer(DataParallel(PoseNet))."""
    return {
        "state_dict": {f"model.module.{k}": v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "epoch": 2,
    }


# -- tests -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stacks", STACKS)
def test_bearpaw_loads_strictly_and_reproduces_the_public_forward(stacks):
    state, x, want = bearpaw_case(stacks)
    model = dense_from_state(state, "sd")
    assert isinstance(model, BearpawHourglass)
    assert model.config.n_stacks == stacks and model.config.n_blocks == BEARPAW[stacks]
    assert model.config.depth == 4 and model.config.features == 8
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {
        k: tuple(v.shape) for k, v in state.items()
    }
    with torch.no_grad():
        got = model.eval()(x)
    assert isinstance(got, list) and len(got) == stacks
    assert scaled_error(got, want) <= EXACT


@pytest.mark.parametrize("stacks", STACKS)
def test_posenet_loads_strictly_and_reproduces_the_public_forward(stacks):
    state, x, want = posenet_case(stacks)
    model = dense_from_state(state, "sd")
    assert isinstance(model, PoseNet)
    assert model.config.n_stacks == stacks and model.config.depth == 4
    assert set(model.state_dict()) == set(state)
    with torch.no_grad():
        got = model.eval()(x)
    assert got.shape == (2, stacks, 16, 16, 16)
    assert scaled_error(got, want) <= EXACT


@pytest.mark.parametrize("stacks", STACKS)
@pytest.mark.parametrize("layout", ["bearpaw", "posenet"])
def test_full_rank_conversion_from_the_wrapped_checkpoint_is_exact(tmp_path, layout, stacks):
    case, wrap = (
        (bearpaw_case, wrapped_bearpaw) if layout == "bearpaw" else (posenet_case, wrapped_posenet)
    )
    state, x, want = case(stacks)
    path = tmp_path / "public.pth"
    torch.save(wrap(state), path)
    tnet = tcompress.convert(path).eval()
    blocks = BEARPAW[stacks] if layout == "bearpaw" else 1
    assert tnet.summary["mode_sizes"] == [stacks, 4, 3, blocks, 4, 4, 3, 3]
    assert tnet.summary["architecture"] == (
        "BearpawHourglass" if layout == "bearpaw" else "PoseNet"
    )
    for form in ("reconstructed", "factorized"):
        with torch.no_grad():
            got = tnet.set_forward(form)(x)
        assert scaled_error(got, want) <= EXACT, form


def test_tensor_members_are_the_3x3_hourglass_convs_and_biases_stay_dense():
    state, x, _ = bearpaw_case(2)
    tnet = tcompress.convert(state)
    keys = set(tnet.net.state_dict())
    # Level i = 3 of the keys is depth 0 (outermost); its skip pathway is up1, slot 0.
    assert tnet.net.hg[0].hg[3][0][0].conv2.index == (0, 0, 0, 0)
    assert tnet.net.hg[1].hg[0][2][0].conv2.index == (1, 3, 2, 0)
    assert "hg.0.hg.3.0.0.conv2.weight" not in keys and "hg.0.hg.3.0.0.conv2.bias" in keys
    # The innermost residual stays dense.
    assert "hg.0.hg.0.3.0.conv2.weight" in keys
    state, x, _ = posenet_case(1)
    tnet = tcompress.convert(state)
    assert tnet.net.hgs[0][0].low2.low2.low3.conv2.conv.index == (0, 2, 2, 0)
    assert "hgs.0.0.low2.low2.low2.low2.conv2.conv.weight" in set(tnet.net.state_dict())


@pytest.mark.parametrize("layout", ["bearpaw", "posenet"])
def test_reduced_rank_parameter_counts(layout):
    state, _, _ = (bearpaw_case if layout == "bearpaw" else posenet_case)(2)
    dense_params = sum(p.numel() for p in dense_from_state(state, "sd").parameters())
    blocks = 1
    shape = (2, 4, 3, blocks, 4, 4, 3, 3)
    tucker = (1, 2, 2, 1, 2, 3, 2, 3)
    tnet = tcompress.convert(state, "tucker", tucker)
    # Tucker: the core prod(R) plus the factors sum(D * R) replace the prod(D) kernel entries.
    expected = dense_params - math.prod(shape) + math.prod(tucker)
    expected += sum(d * r for d, r in zip(shape, tucker))
    assert sum(p.numel() for p in tnet.parameters()) == expected
    assert tnet.summary["params_before"] == dense_params
    assert tnet.summary["params_after"] == expected
    bonds = (2, 3, 3, 3, 4, 6, 3)
    tnet = tcompress.convert(state, "mps", bonds)
    r = (1, *bonds, 1)
    cores = sum(r[k] * d * r[k + 1] for k, d in enumerate(shape))
    assert tnet.summary["params_after"] == dense_params - math.prod(shape) + cores


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {"image": x.numpy()})]


@pytest.mark.parametrize("form", ["factorized", pytest.param("dense", marks=pytest.mark.slow)])
def test_bearpaw_exports_a_list_of_heatmaps(tmp_path, form):
    state, x, want = bearpaw_case(2)
    tnet = tcompress.convert(state, "tucker", (2, 2, 2, 1, 3, 3, 2, 2)).eval()
    report = export_onnx(tnet, tmp_path / "t.onnx", form, input_size=64)
    assert report.validation.ok
    model = onnx.load(tmp_path / "t.onnx")
    assert [o.name for o in model.graph.output] == ["heatmaps_0", "heatmaps_1"]
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    with torch.no_grad():
        ref = tnet(x)
    got = _run_onnx(tmp_path / "t.onnx", x)
    assert [g.shape for g in got] == [r.shape for r in ref]
    assert scaled_error(got, ref) <= 1e-4


@pytest.mark.parametrize(
    "method, form",
    [
        ("tucker", "factorized"),
        ("mps", "dense"),
        pytest.param("tucker", "dense", marks=pytest.mark.slow),
        pytest.param("mps", "factorized", marks=pytest.mark.slow),
    ],
)
def test_posenet_exports_channels_last_and_stacked(tmp_path, method, form):
    state, x, want = posenet_case(2)
    ranks = (2, 2, 2, 1, 3, 3, 2, 2) if method == "tucker" else (2, 3, 3, 3, 4, 6, 3)
    tnet = tcompress.convert(state, method, ranks).eval()
    report = export_onnx(tnet, tmp_path / "p.onnx", form, input_size=64)
    assert report.validation.ok
    model = onnx.load(tmp_path / "p.onnx")
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 64, 64, 3]
    assert [o.name for o in model.graph.output] == ["heatmaps"]
    (got,) = _run_onnx(tmp_path / "p.onnx", x)
    with torch.no_grad():
        ref = tnet(x)
    assert got.shape == ref.shape == (2, 2, 16, 16, 16)
    assert scaled_error(got, ref) <= 1e-4


def test_saved_public_tnets_load_with_their_layout(tmp_path):
    state, x, want = posenet_case(1)
    tnet = tcompress.convert(state, "tucker", (1, 3, 2, 1, 3, 3, 3, 3)).eval()
    tcompress.save(tnet, tmp_path / "t.pt")
    loaded = tcompress.load(tmp_path / "t.pt").eval()
    assert isinstance(loaded.net, PoseNet)
    assert loaded.meta["architecture"]["name"] == "PoseNet"
    with torch.no_grad():
        assert torch.equal(loaded(x), tnet(x))


def test_posenet_with_wider_inner_levels_is_refused():
    keys = posenet_keys(1)
    keys["hgs.0.0.low1.conv3.conv.weight"] = (12, 4, 1, 1)
    with pytest.raises(CheckpointError, match=r"trained with increase=4 .* expected increase=0"):
        tcompress.convert(random_state(keys))


def test_partial_public_checkpoint_names_what_is_missing():
    state = random_state(bearpaw_keys(2, 1))
    del state["score_.0.weight"], state["res.1.0.conv2.bias"]
    with pytest.raises(CheckpointError, match=r"2 missing key\(s\) \('res.1.0.conv2.bias'"):
        tcompress.convert(state)
    with pytest.raises(CheckpointError, match=r"other known layouts: BearpawHourglass"):
        tcompress.convert({"fc.weight": torch.zeros(2, 2)})


@pytest.mark.parametrize("layout", [pytest.param("bearpaw", marks=pytest.mark.slow), "posenet"])
def test_finetune_and_evaluate_accept_converted_public_layouts(tmp_path, layout):
    from click.testing import CliRunner

    from tcompress.cli import main

    state, _, _ = (bearpaw_case if layout == "bearpaw" else posenet_case)(1)
    tnet = tcompress.convert(
        state, "tucker", (1, 2, 2, 2 if layout == "bearpaw" else 1, 3, 3, 3, 3)
    )
    tcompress.save(tnet, tmp_path / "t.pt")
    args = ["finetune", str(tmp_path / "t.pt"), "--data", "synthetic", "--steps", "2"]
    args += ["--batch-size", "2", "--image-size", "64", "--eval-samples", "2"]
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "ft.pt"), "--json"])
    assert r.exit_code == 0, r.output
    tuned = tcompress.load(tmp_path / "ft.pt")
    assert type(tuned.net) is type(tnet.net)
    r = CliRunner().invoke(
        main, ["evaluate", str(tmp_path / "ft.pt"), "--n", "2", "--image-size", "64", "--json"]
    )
    assert r.exit_code == 0, r.output
