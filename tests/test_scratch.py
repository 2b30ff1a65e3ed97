"""T-Nets trained from scratch: the random initialisation's spread (every method, several ranks),
the ranks for a ratio, training, resuming, the file every command reads, and bad input."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress import methods
from tcompress.cli import main
from tcompress.data import SyntheticPose
from tcompress.errors import MethodError, RankError, TcompressError
from tcompress.family import layout_family
from tcompress.methods._random import balanced_orthonormal, harmonic_frame, random_cores
from tcompress.models import StackedHourglass
from tcompress.scratch import dense_kernel_std, random_tnet, scratch_ranks
from tcompress.serialize import load
from tcompress.tnet import TNet
from tcompress.train import TrainSettings, fit, read_state
from tcompress.train import train as train_new

#: W: 2 x 2 x 3 x 2 x 16 x 16 x 3 x 3, block kernels of 16 x 16 x 3 x 3 (fan_in 144).
CONFIG = dict(n_stacks=2, depth=2, block_depth=2, features=16, n_joints=4)
#: Ranks of every T-Net method, from full to small (a core of at least a few hundred entries
#: per kernel: each kernel's spread is then close to its expectation).
RANKS = {
    "tucker": ["full", "2,2,3,2,8,8,3,3", "1,2,2,1,12,6,2,3", "f_in=4,f_out=16"],
    "mps": ["full", "2,4,8,16,48,9,3", "2,4,12,4,32,9,3", "2"],
    "cp": ["16", "128", "1024"],
    "tr": ["full", "2,4,4,4,4,4,4,4", "4", "1,4,12,24,48,9,3,2"],
}
CASES = [(m, r) for m, ranks in RANKS.items() for r in ranks]
#: A train whose grid bonds shrink (12 -> 4 across the block mode): its grid slices keep the
#: norm of an isotropic input only on average, so the kernels' spreads vary more (the whole W
#: still has the target's).
SHRINKING = {("mps", "2,4,12,4,32,9,3")}
TINY = dict(n_stacks=1, depth=2, block_depth=1, features=8, n_joints=16)
COMMON = ["--image-size", "64", "--batch-size", "4", "--eval-samples", "8"]
SHAPE = ["--stacks", "1", "--depth", "2", "--block-depth", "1", "--features", "8"]


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


class Cached(torch.utils.data.Dataset):
    """A few synthetic samples at 64 x 64, generated once (fast steps)."""

    def __init__(self, n=8):
        source = SyntheticPose(n, 64, 16, seed=3, split="train")
        self.items = [source[i] for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def kernels(tnet: TNet) -> torch.Tensor:
    """The rebuilt block kernels, one row per layer."""
    W = tnet.full_tensor().detach().double()
    return W.reshape(-1, math.prod(W.shape[tnet.n_grid :]))


def test_the_target_is_what_conv2d_draws():
    torch.manual_seed(0)
    dense = StackedHourglass(**CONFIG)
    stacked = torch.stack([c.weight.detach() for c in dense.hourglasses[0].levels[0].skip.convs])
    assert dense_kernel_std(16 * 3 * 3) == pytest.approx(1 / math.sqrt(3 * 144))
    assert float(stacked.std()) == pytest.approx(dense_kernel_std(144), rel=0.03)


@pytest.mark.parametrize("method,ranks", CASES)
def test_every_rebuilt_kernel_has_the_dense_inits_spread(method, ranks):
    tnet = random_tnet(CONFIG, method, ranks, seed=1)
    target = dense_kernel_std(144)
    rows = kernels(tnet)
    assert float(rows.std()) == pytest.approx(target, rel=0.1)
    assert abs(float(rows.mean())) < 0.1 * target
    per_layer = rows.std(dim=1) / target
    if (method, ranks) not in SHRINKING:
        assert float(per_layer.min()) > 0.8 and float(per_layer.max()) < 1.2, per_layer
    # the same holds in the factorized form, which the rebuilt W is only another view of
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        a = tnet.eval()(x)
        b = tnet.set_forward("factorized")(x)
    assert all(torch.allclose(p, q, atol=1e-5, rtol=1e-4) for p, q in zip(a, b))


def test_the_scale_sits_where_the_optimizer_moves_the_kernels_as_dense_ones():
    # Tucker: the core drawn as a dense kernel is, every factor row of unit norm; CP: every
    # weight at the dense kernels' scale.
    target = dense_kernel_std(144)
    tucker = random_tnet(CONFIG, "tucker", "2,2,3,2,8,8,3,3").tensor.requires_grad_(False)
    assert float(tucker.core.std()) == pytest.approx(target, rel=0.05)
    for u in tucker.factors:
        torch.testing.assert_close(u.norm(dim=1), torch.ones(u.shape[0]))
        d, r = u.shape
        torch.testing.assert_close(u.t() @ u, torch.eye(r) * d / r, atol=1e-5, rtol=1e-5)
    cp = random_tnet(CONFIG, "cp", "128").tensor.requires_grad_(False)
    assert torch.equal(cp.weights, torch.full((128,), target))
    for k, u in enumerate(cp.factors):
        assert float(u.square().mean()) == pytest.approx(
            128 ** (-1 / 8), rel=1e-5 if k < 4 else 0.1
        )


def test_truncating_a_random_dense_w_would_shrink_it():
    # What the initialisation avoids: the HOSVD of the dense init's W at the same ranks keeps
    # about prod(R / D) of its energy.
    torch.manual_seed(0)
    dense = StackedHourglass(**CONFIG)
    ranks = "2,2,3,2,8,8,3,3"
    truncated = tcompress.convert(dense, "tucker", ranks)
    shrink = float(kernels(truncated).std()) / dense_kernel_std(144)
    assert shrink < 0.6
    assert float(kernels(random_tnet(CONFIG, "tucker", ranks)).std()) / dense_kernel_std(
        144
    ) == pytest.approx(1, rel=0.1)


def test_balanced_factors_and_cores():
    g = torch.Generator().manual_seed(0)
    for d in range(1, 10):
        for r in range(1, d + 1):
            frame = harmonic_frame(d, r)
            u = balanced_orthonormal(d, r, g, dtype=torch.float64)
            for m in (frame, u):
                torch.testing.assert_close(m.t() @ m, torch.eye(r, dtype=torch.float64))
                torch.testing.assert_close(m.square().sum(1), torch.full((d,), r / d).double())
    # A train with growing grid bonds: every kernel's norm exactly std * sqrt(its 4*5*6 entries).
    std = 3.0 / math.sqrt(4 * 5 * 6)
    cores = random_cores((2, 3, 4, 5, 6), (1, 2, 6, 5, 3, 1), std=std, n_grid=2, generator=g)
    assert [tuple(c.shape) for c in cores] == [
        (1, 2, 2),
        (2, 3, 6),
        (6, 4, 5),
        (5, 5, 3),
        (3, 6, 1),
    ]
    train = tcompress.methods.get("mps").tensor_type(cores).full()
    norms = train.reshape(6, -1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((6,), 3.0), rtol=1e-5, atol=0)


def test_the_dense_layers_keep_their_default_init():
    tnet = random_tnet(CONFIG, "tucker", "2,2,3,2,8,8,3,3", seed=3)
    torch.manual_seed(3)
    dense = StackedHourglass(**CONFIG).state_dict()
    state = {k.removeprefix("net."): v for k, v in tnet.state_dict().items()}
    kept = [k for k in state if not k.startswith("tensor.")]
    assert kept and all(torch.equal(state[k], dense[k]) for k in kept)
    blocks = layout_family(StackedHourglass(**CONFIG)).weight_keys()
    assert len(blocks) == 24 and not set(blocks) & set(state)
    assert all(k in dense for k in state if not k.startswith("tensor."))
    again = random_tnet(CONFIG, "tucker", "2,2,3,2,8,8,3,3", seed=3).state_dict()
    assert all(torch.equal(again[k], v) for k, v in tnet.state_dict().items())
    other = random_tnet(CONFIG, "tucker", "2,2,3,2,8,8,3,3", seed=4)
    assert not torch.equal(other.tensor.core, tnet.tensor.core)


def test_the_summary_says_trained_from_scratch():
    tnet = random_tnet(CONFIG, "mps", "2,4,8,16,48,9,3")
    s = tnet.summary
    assert s["source"] is None and s["source_sha256"] is None and math.isnan(s["relative_error"])
    assert s["scratch"]["seed"] == 0 and s["scratch"]["ranks_from"] == "given"
    assert s["params_after"] == sum(p.numel() for p in tnet.parameters())
    assert s["compression_ratio"] == pytest.approx(s["params_before"] / s["params_after"])
    assert s["ranks"] == [2, 4, 8, 16, 48, 9, 3] and list(tnet.ranks) == s["ranks"]
    init = methods.get("mps").initialisation(s)
    assert "trained from scratch, no source checkpoint" in init
    assert methods.get("mps").initialisation({"ranks": [1]}) == "TT-SVD"


@pytest.mark.parametrize("method", methods.names(methods.TNET))
def test_ranks_for_a_ratio_are_the_largest_uniform_ones_then_filled(method):
    tnet = random_tnet(CONFIG, method, ratio=2)
    s = tnet.summary
    assert s["target"] == "ratio 2" and s["scratch"]["ranks_from"] == "uniform"
    assert 2 <= s["compression_ratio"]
    chosen = methods.get(method)
    shape = tuple(s["mode_sizes"])
    other = s["params_before"] - math.prod(shape)

    def ratio(ranks):
        return s["params_before"] / (chosen.params(shape, ranks) + other)

    # The largest uniform value r that meets the ratio, then ranks at r raised by one.
    r = max(r for r in range(1, 512) if ratio(chosen.uniform_ranks(r, shape)) >= 2)
    uniform = chosen.uniform_ranks(r, shape)
    assert all(a in (b, b + 1) for a, b in zip(tnet.ranks, uniform))
    assert all(a == b for a, b in zip(tnet.ranks, uniform) if b != r)
    assert ratio(chosen.uniform_ranks(r + 1, shape)) < 2
    # Nothing left to raise: every rank at r below its limit would pass the budget.
    limits = [r + 1] if method == "cp" else chosen.uniform_ranks(math.prod(shape), shape)
    for k, (rank, limit) in enumerate(zip(tnet.ranks, limits)):
        if rank == r and rank < limit:
            wider = chosen.cap([*tnet.ranks[:k], rank + 1, *tnet.ranks[k + 1 :]], shape)
            assert ratio(wider) < 2
    if method == "tucker":  # the small modes stay whole, the channels narrow alike
        assert tnet.ranks[:4] == (2, 2, 3, 2) and abs(tnet.ranks[4] - tnet.ranks[5]) <= 1
        assert tnet.ranks[4] < 16 and s["compression_ratio"] < 2 * 1.03
    if method == "tr":
        assert tnet.ranks[-1] == 1
    assert scratch_ranks(method, shape, other, 2).ranks == tnet.ranks


@pytest.mark.parametrize("method", methods.names(methods.TNET))
def test_a_few_steps_lower_the_loss(method):
    ranks = {"tucker": "1,2,3,1,4,4,3,3", "mps": "4", "cp": "16", "tr": "2"}[method]
    tnet = random_tnet(TINY, method, ranks)
    settings = TrainSettings(steps=30, batch_size=8, optimizer="adam", lr=3e-3, milestones=())
    result = fit(tnet, Cached(), settings, log_every=1)
    losses = [h["loss"] for h in result.history]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_the_library_trains_and_writes_a_tnet(tmp_path):
    out = tmp_path / "cp.pt"
    sizes = dict(batch_size=4, image_size=64, train_samples=8, eval_samples=4)
    result = train_new(TINY, "synthetic", method="cp", ranks=12, steps=2, output=out, **sizes)
    assert isinstance(result.model, TNet) and result.model.method == "cp"
    assert result.settings.lr == 2.5e-4 and result.settings.schedule == "step"  # train's
    loaded = load(out)
    assert loaded.ranks == (12,) and loaded.summary["scratch"]["seed"] == 0
    with pytest.raises(TcompressError, match="build a new T-Net"):
        tcompress.finetune(loaded, "synthetic", ranks=4, steps=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("scratch")
    args = ["train", "--data", "synthetic", *SHAPE, "--steps", "3", *COMMON]
    r = run([*args, "--method", "tucker", "--ranks", "1,2,2,1,4,4,2,3", "-o", d / "t.pt"])
    assert r.exit_code == 0, r.output
    assert "T-Net trained from scratch: tucker, ranks 1,2,2,1,4,4,2,3;" in r.output
    return d


def test_cli_writes_a_tnet_every_command_reads(trained, tmp_path):
    path = trained / "t.pt"
    tnet = tcompress.load(path)
    assert isinstance(tnet, TNet) and tnet.method == "tucker"
    assert tnet.ranks == (1, 2, 2, 1, 4, 4, 2, 3)
    assert tnet.summary["compression_ratio"] == pytest.approx(
        tnet.summary["params_before"] / sum(p.numel() for p in tnet.parameters())
    )
    r = run(["info", path])
    assert r.exit_code == 0, r.output
    assert "trained from scratch, no source checkpoint" in r.output
    assert "converted from" not in r.output
    r = run(["info", path, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["summary"]["source"] is None
    assert "NaN" not in r.output and json.loads(r.output)["summary"]["relative_error"] is None
    r = run(["evaluate", path, "-n", "4", "--image-size", "64", "--json"])
    assert r.exit_code == 0, r.output
    assert 0 <= json.loads(r.output)["pckh"]["mean"] <= 100
    r = run(
        ["finetune", path, "--data", "synthetic", "--steps", "2", *COMMON, "-o", tmp_path / "f.pt"]
    )
    assert r.exit_code == 0, r.output
    assert load(tmp_path / "f.pt").summary["scratch"] == tnet.summary["scratch"]
    r = run(
        ["export", path, "--form", "factorized", "--input-size", "64", "-o", tmp_path / "t.onnx"]
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("method,ratio", [("tucker", "2"), ("mps", "1.5")])
def test_cli_ratio(tmp_path, method, ratio):
    args = ["train", "--data", "synthetic", *SHAPE, "--steps", "1", *COMMON]
    r = run([*args, "--method", method, "--ratio", ratio, "-o", tmp_path / "t.pt", "--json"])
    assert r.exit_code == 0, r.output
    summary = load(tmp_path / "t.pt").summary
    assert summary["method"] == method and summary["compression_ratio"] >= float(ratio)
    assert summary["target"] == f"ratio {ratio}"


def test_cli_resume_repeats_the_uninterrupted_run(tmp_path, interrupt_at):
    args = ["train", "--data", "synthetic", *SHAPE, "--steps", "4", *COMMON]
    args += ["--method", "mps", "--ranks", "2"]
    r = run([*args, "-o", tmp_path / "whole.pt"])
    assert r.exit_code == 0, r.output
    interrupt_at(3)
    r = run([*args, "-o", tmp_path / "cut.pt", "--save-every", "2"])
    assert r.exit_code == 130 and "continue with --resume" in r.output
    assert read_state(tmp_path / "cut.pt.state")["step"] == 2
    interrupt_at(None)
    r = run([*args, "-o", tmp_path / "cut.pt", "--resume", tmp_path / "cut.pt.state"])
    assert r.exit_code == 0, r.output
    whole, resumed = load(tmp_path / "whole.pt"), load(tmp_path / "cut.pt")
    assert isinstance(resumed, TNet) and resumed.ranks == whole.ranks
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "options,message",
    [
        (
            ["--method", "svd-magic", "--ranks", "4"],
            "method 'svd-magic' is unknown; expected one of tucker, mps, cp, tr, layerwise-tucker",
        ),
        (
            ["--method", "tai", "--ranks", "4"],
            "method 'tai' decomposes each layer on its own; a T-Net trained from scratch takes "
            "one of tucker, mps, cp, tr",
        ),
        (
            ["--ranks", "1,2,3"],
            "got 3 rank(s) ('1,2,3'); expected 8 Tucker ranks, one per mode (stack, depth, pathway",
        ),
        (
            ["--ranks", "1,2,3,1,9,8,3,3"],
            "rank of mode f_in is 9; expected an integer from 1 to 8 (mode size 8)",
        ),
        (["--method", "cp", "--ranks", "full"], "CP needs one rank, the number of rank-one terms"),
        (
            ["--ranks", "full", "--ratio", "2"],
            "a T-Net trained from scratch takes --ranks or --ratio, one of them; got both",
        ),
        (["--method", "mps"], "takes --ranks or --ratio, one of them; got neither"),
        (["--ratio", "50"], "compression ratio 50 is out of reach: with tucker this network"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, options, message):
    out = tmp_path / "t.pt"
    r = run(["train", "--data", "synthetic", *SHAPE, "--steps", "1", *COMMON, *options, "-o", out])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Error: ") and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


def test_library_errors_name_the_parameters():
    with pytest.raises(RankError, match="takes ranks or ratio, one of them; got both"):
        random_tnet(TINY, "tucker", "full", ratio=2)
    with pytest.raises(MethodError, match="decomposes each layer on its own"):
        random_tnet(TINY, "layerwise-cp", "4")
