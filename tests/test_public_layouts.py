"""The public hourglass layouts (bearpaw/pytorch-pose ``hg``, princeton-vl ``PoseNet``).

The ground truth is ``fixtures/public-layouts`` (see its README), produced by running the public
code: every state_dict key and shape of both networks at 1, 2 and 8 stacks, and a bearpaw ``hg1``
checkpoint, saved as bearpaw's trainer saves one, with the public forward's heatmaps on a fixed
input. tcompress's models must have exactly those keys and reproduce those heatmaps.

The smaller cases the other tests use are the fixture's key sets with every width divided by 32
(``narrow``): the same keys and structure, hourglass kernels 4 x 4 x 3 x 3. Their reference
forward is, for PoseNet, a function of the state_dict alone (``F.conv2d``, ``F.batch_norm``)
following the public code; for bearpaw, the dense :class:`BearpawHourglass`, which the fixture
checkpoint ties to the public code.
"""

import functools
import json
import math
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import tcompress
from tcompress.checkpoint import read_checkpoint
from tcompress.cli import main
from tcompress.errors import CheckpointError
from tcompress.export.onnx import export_onnx
from tcompress.layouts import build
from tcompress.models import BearpawConfig, BearpawHourglass, PoseNet, PoseNetConfig
from tcompress.source import read_dense

EXACT = 1e-5  # max |T-Net - public| / max |public| at full rank, float32

FIXTURES = Path(__file__).parent / "fixtures" / "public-layouts"
CHECKPOINT = FIXTURES / "bearpaw_hg_s1_b1.pth.tar"  # hg(num_stacks=1, num_blocks=1)
PUBLIC_WIDTHS = (64, 128, 256)  # stem, stem width / inner width, features: narrowed together
NARROW = 32


# -- key sets and shapes, as the public code creates them ------------------------------------------
@functools.cache
def public_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Configuration name -> {key: shape} of the bare public model, in its own key order."""
    with open(FIXTURES / "state_dict_shapes.json") as f:
        shapes = json.load(f)
    return {name: {k: tuple(s) for k, s in keys.items()} for name, keys in shapes.items()}


def public_name(layout, stacks, blocks=1):
    if layout == "bearpaw":
        return f"bearpaw hg num_stacks={stacks} num_blocks={blocks} num_classes=16"
    return f"princeton-vl PoseNet nstack={stacks} inp_dim=256 oup_dim=16"


def public_keys(layout, stacks, blocks=1, narrow=1):
    """The fixture's keys and shapes; with ``narrow``, every width (64, 128, 256) divided by it,
    the joints (16), input channels (3) and kernel sizes kept."""
    keys = public_shapes()[public_name(layout, stacks, blocks)]
    return {
        key: tuple(d // narrow if i < 2 and d in PUBLIC_WIDTHS else d for i, d in enumerate(shape))
        for key, shape in keys.items()
    }


def tcompress_config(name):
    """The tcompress architecture and configuration of a fixture configuration name."""
    values = {k: int(v) for k, v in (part.split("=") for part in name.split() if "=" in part)}
    if name.startswith("bearpaw"):
        config = BearpawConfig(
            n_stacks=values["num_stacks"],
            n_blocks=values["num_blocks"],
            n_joints=values["num_classes"],
        )
        return "BearpawHourglass", config
    config = PoseNetConfig(
        n_stacks=values["nstack"], features=values["inp_dim"], n_joints=values["oup_dim"]
    )
    return "PoseNet", config


def shapes_of(state):
    return {k: tuple(v.shape) for k, v in state.items()}


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
    return max(stack_errors(got, want))


def stack_errors(got, want):
    """max |got - want| / max |want| of every stack."""
    got = got if isinstance(got, list | tuple) else [got]
    want = want if isinstance(want, list | tuple) else [want]
    assert len(got) == len(want)
    return [float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, want)]


#: stacks -> blocks per residual of the narrowed cases (the fixture's configurations).
BEARPAW = {1: 2, 2: 1, 8: 1}
STACKS = [1, 2, pytest.param(8, marks=pytest.mark.slow)]  # 8 stacks: about 10 s a test


def bearpaw_case(stacks, seed=0):
    state = random_state(public_keys("bearpaw", stacks, BEARPAW[stacks], NARROW), seed)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed + 1))
    reference = read_dense({k: v.clone() for k, v in state.items()}).eval()
    with torch.no_grad():
        want = reference(x)
    return state, x, want


def posenet_case(stacks, seed=0):
    state = random_state(public_keys("posenet", stacks, narrow=NARROW), seed)
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


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


# -- tests: the public key sets ----------------------------------------------------------------
ALL_PUBLIC = list(public_shapes())
LOADABLE = [
    n if "=8 " not in n else pytest.param(n, marks=pytest.mark.slow) for n in ALL_PUBLIC
]  # 8 stacks: the same structure as 2, several times the bytes


@pytest.mark.parametrize("name", ALL_PUBLIC)
def test_the_models_have_exactly_the_public_keys_and_shapes(name):
    arch, config = tcompress_config(name)
    model = build(arch, config)  # on the meta device: no storage, no initialisation
    assert shapes_of(model.state_dict()) == public_shapes()[name]
    # The layout is read off the keys and shapes alone, and the state loads strictly.
    state = {k: torch.empty(s, device="meta") for k, s in public_shapes()[name].items()}
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        state[key] = torch.empty((), dtype=torch.long, device="meta")
    detected = read_dense(state)
    assert type(detected).__name__ == arch and detected.config == config


def test_bottlenecks_have_a_downsample_exactly_where_the_width_changes():
    # In the public widths (stem 64, features 256) layer3 keeps its width; in others it may not.
    for stem, features, with_layer3 in ((64, 256, False), (4, 8, True), (2, 16, True)):
        with torch.device("meta"):
            model = BearpawHourglass(n_stacks=2, n_blocks=2, stem_features=stem, features=features)
        assert [model.layer1[0].conv3.out_channels, model.layer2[0].conv3.out_channels] == [
            2 * stem,
            4 * stem,
        ]
        assert model.layer3[0].bn1.num_features == 4 * stem
        assert (model.layer3[0].downsample is not None) == with_layer3
        for name, module in model.named_modules():
            if hasattr(module, "conv3"):
                widens = module.bn1.num_features != module.conv3.out_channels
                assert (module.downsample is not None) == widens, name
    with torch.no_grad():
        out = BearpawHourglass(n_stacks=2, n_blocks=1, depth=2, stem_features=4, features=8)(
            torch.randn(1, 3, 32, 32)
        )
    assert [o.shape for o in out] == [(1, 16, 8, 8)] * 2


@pytest.mark.parametrize("name", LOADABLE)
def test_wrapped_public_checkpoints_load_strictly_through_info(tmp_path, name):
    arch, config = tcompress_config(name)
    state = random_state(public_shapes()[name])
    wrap = wrapped_bearpaw if arch == "BearpawHourglass" else wrapped_posenet
    path = tmp_path / "public.pth.tar"
    torch.save(wrap(state), path)
    info = json.loads(cli("info", path, "--json").stdout)
    assert info["kind"] == "dense"
    assert info["architecture"] == {"name": arch, "config": config.to_dict()}
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert info["params"] == sum(v.numel() for k, v in state.items() if not k.endswith(buffers))
    ckpt = read_checkpoint(path)
    model = read_dense(ckpt.state_dict)
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


# -- tests: the public checkpoint and its outputs ----------------------------------------------
@pytest.fixture(scope="module")
def public_io():
    return torch.load(FIXTURES / "bearpaw_hg_s1_b1_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The fixture checkpoint converted at full rank by ``tcompress convert``."""
    path = tmp_path_factory.mktemp("public") / "full.pt"
    cli("convert", CHECKPOINT, "--ranks", "full", "-o", path, "--json")
    return path


def test_the_public_checkpoint_loads_strictly_and_gives_the_public_outputs(public_io):
    ckpt = read_checkpoint(CHECKPOINT)
    model = read_dense(ckpt.state_dict).eval()
    assert isinstance(model, BearpawHourglass)
    assert model.config == BearpawConfig(n_stacks=1, n_blocks=1)
    with torch.no_grad():
        got = model(public_io["input"])
    assert len(got) == len(public_io["outputs"]) == 1
    assert max(stack_errors(got, public_io["outputs"])) <= EXACT


@pytest.mark.parametrize("form", ["reconstructed", "factorized"])
def test_full_rank_conversion_reproduces_the_public_outputs(converted, public_io, form):
    x, want = public_io["input"], public_io["outputs"]
    from_cli = tcompress.load(converted, forward=form).eval()
    from_api = tcompress.convert(CHECKPOINT).set_forward(form).eval()
    assert from_api.summary["architecture"] == "BearpawHourglass"
    assert from_api.summary["mode_sizes"] == [1, 4, 3, 1, 128, 128, 3, 3]
    for tnet in (from_cli, from_api):
        with torch.no_grad():
            got = tnet(x)
        assert [g.shape for g in got] == [w.shape for w in want]
        assert max(stack_errors(got, want)) <= EXACT, form


def test_the_converted_public_checkpoint_exports_a_valid_onnx_file(converted, tmp_path):
    out = tmp_path / "public.onnx"
    report = json.loads(cli("export", converted, "--input-size", 64, "-o", out, "--json").stdout)
    assert report["validation"]["ok"] and report["outputs"] == ["heatmaps_0"]
    onnx.checker.check_model(str(out))


def test_the_converted_public_checkpoint_finetunes_and_evaluates(converted, tmp_path):
    tuned = tmp_path / "tuned.pt"
    args = ["--data", "synthetic", "--steps", 2, "--batch-size", 2, "--image-size", 64]
    cli("finetune", converted, *args, "--eval-samples", 2, "-o", tuned, "--json")
    assert isinstance(tcompress.load(tuned).net, BearpawHourglass)
    report = json.loads(
        cli("evaluate", tuned, "--data", "synthetic", "-n", 4, "--image-size", 64, "--json").stdout
    )
    assert report["kind"] == "tnet" and report["image_size"] == 64


# -- tests: the narrowed cases -----------------------------------------------------------------
@pytest.mark.parametrize("stacks", STACKS)
def test_posenet_loads_strictly_and_reproduces_the_public_forward(stacks):
    state, x, want = posenet_case(stacks)
    model = read_dense(state)
    assert isinstance(model, PoseNet)
    assert model.config.n_stacks == stacks and model.config.depth == 4
    assert shapes_of(model.state_dict()) == shapes_of(state)
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
    # The innermost residual and the stem stay dense.
    assert "hg.0.hg.0.3.0.conv2.weight" in keys and "layer2.0.conv2.weight" in keys
    state, x, _ = posenet_case(1)
    tnet = tcompress.convert(state)
    assert tnet.net.hgs[0][0].low2.low2.low3.conv2.conv.index == (0, 2, 2, 0)
    assert "hgs.0.0.low2.low2.low2.low2.conv2.conv.weight" in set(tnet.net.state_dict())


@pytest.mark.parametrize("layout", ["bearpaw", "posenet"])
def test_reduced_rank_parameter_counts(layout):
    state, _, _ = (bearpaw_case if layout == "bearpaw" else posenet_case)(2)
    dense_params = sum(p.numel() for p in read_dense(state).parameters())
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
    keys = public_keys("posenet", 1, narrow=NARROW)
    keys["hgs.0.0.low1.conv3.conv.weight"] = (12, 4, 1, 1)
    with pytest.raises(CheckpointError, match=r"trained with increase=4 .* expected increase=0"):
        tcompress.convert(random_state(keys))


def test_partial_public_checkpoint_names_what_is_missing():
    state = random_state(public_keys("bearpaw", 2, narrow=NARROW))
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
