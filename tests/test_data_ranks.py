"""Ranks chosen on data: each mode's truncation cost to the block convolutions' outputs."""

import math

import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress import methods
from tcompress.cli import main
from tcompress.decompose import tucker
from tcompress.errors import RankError
from tcompress.methods.selection import allocate, allocate_groups
from tcompress.models import StackedHourglass
from tcompress.passes.data_aware import block_statistics, mode_costs, mode_dot, output_error
from tcompress.stacking import stack_hourglass

from .conftest import make_hourglass


def batches(n=2, size=32, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(4, 3, size, size, generator=g) for _ in range(n)]


def statistics(hg):
    names = [StackedHourglass.block_key(i)[: -len(".weight")] for i, _ in hg.block_convs()]
    return block_statistics(hg, names, batches())


def test_mode_costs_are_the_measured_output_error_of_each_truncation():
    hg = make_hourglass(features=16)
    W = stack_hourglass(hg.state_dict(), hg.config)
    stats = statistics(hg)
    factors = tucker(W, tuple(W.shape)).factors
    costs = mode_costs(W, stats, factors, points=5)
    total = float(output_error(torch.zeros_like(W), W, stats)[1])
    for k, c in enumerate(costs):
        assert len(c) == W.shape[k] + 1 and c[0] == 1.0 and c[-1] == 0.0
        assert all(a >= b for a, b in zip(c, c[1:]))  # never more for a larger rank
    # A rank on the measured grid (16 features, 5 points: 0, 4, 8, 12, 16) is measured exactly.
    k, r = 4, 8
    u = factors[k][:, :r]
    measured = float(output_error(mode_dot(W, u @ u.T, k), W, stats)[0]) / total
    assert costs[k][r] == pytest.approx(measured, rel=1e-5)


def test_allocation_lowers_the_modes_the_costs_say_are_cheap():
    shape = (2, 2, 8, 8)
    tucker = methods.get("tucker")
    spectra = [torch.ones(d) for d in shape]  # the bound sees every direction alike
    cheap_third = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0] + [0.01] * 7 + [0.0], [1.0] + [0.9] * 7]
    cheap_third[3].append(0.0)
    choice = allocate(tucker, shape, spectra, ratio=2.0, costs=cheap_third)
    assert choice.criterion == "data" and choice.ranks[2] < choice.ranks[3]
    bound = allocate(tucker, shape, spectra, ratio=2.0)
    assert bound.criterion == "bound"
    with pytest.raises(RankError, match=r"costs for ranks up to \[2, 2\]; expected \[2, 2, 8, 8\]"):
        allocate(tucker, shape, spectra, ratio=2.0, costs=cheap_third[:2])


def test_the_costs_of_several_tensors_are_weighed_by_their_weights():
    shape = (2, 8, 8, 3, 3)
    tucker = methods.get("tucker")
    # the same costs for both tensors, each rank regaining less than the one before
    costs = [[[(1 - r / d) ** 2 for r in range(d + 1)] for d in shape]] * 2

    def kept(weights):
        found = allocate_groups(
            tucker, [shape] * 2, [None] * 2, ratio=2.0, costs=costs, weights=weights
        )
        assert found.criterion == "data"
        return [c.tensor_params for c in found.choices]

    first, second = kept([1.0, 4.0])
    assert first < second  # the tensor whose errors weigh more keeps more
    first, second = kept([4.0, 1.0])
    assert first > second
    with pytest.raises(RankError, match=r"expected costs for 2 tensor\(s\), got 1"):
        allocate_groups(tucker, [shape] * 2, [None] * 2, ratio=2.0, costs=costs[:1])
    with pytest.raises(
        RankError, match=r"costs of tensor 2 for ranks up to \[2, 8\]; expected \[2, 8, 8, 3, 3\]"
    ):
        allocate_groups(tucker, [shape] * 2, [None] * 2, ratio=2.0, costs=[costs[0], costs[1][:2]])


@pytest.fixture
def small_search(monkeypatch):
    """The rank search on a few images and finalists (the tests' networks are tiny)."""
    from tcompress import conversion
    from tcompress.passes import rank_search

    monkeypatch.setattr(conversion, "SEARCH_IMAGES", 4)
    monkeypatch.setattr(conversion, "QUICK_IMAGES", 2)
    monkeypatch.setattr(rank_search, "FINALISTS", 2)


def test_convert_with_data_meets_the_ratio_and_says_what_chose(small_search):
    hg = make_hourglass(features=16)
    tnet = tcompress.convert(hg, ratio=2.0, data=batches(), refine_samples=8)
    s = tnet.summary
    assert 2.0 <= s["compression_ratio"] <= 2.0 * 1.03
    assert s["predicted_error"] is None  # measured costs bound nothing
    assert not any("did not choose" in n for n in s["notes"])
    search = s["rank_search"]
    assert search["chosen"] == s["ranks"] and search["images"] == 4
    assert search["agreement"] == max(t["agreement"] for t in search["tried"])
    for method in ("mps", "tr"):  # bonds allocated on measured costs, with no climb
        train = tcompress.convert(hg, method=method, ratio=2.0, data=batches(), refine_samples=8)
        assert 2.0 <= train.summary["compression_ratio"] <= 2.0 * 1.03
        assert not any("did not choose" in n for n in train.summary["notes"])
        assert train.summary["rank_search"] is None and train.summary["predicted_error"] is None
    cp = tcompress.convert(hg, method="cp", ratio=2.0, data=batches(), refine_samples=8)
    assert (
        "the data did not choose the ranks: cp has no data-aware allocation (Tucker, MPS and TR "
        "have; CP's one rank is the ratio's)" in " ".join(cp.summary["notes"])
    )


def test_bond_costs_are_the_measured_output_error_of_each_truncated_unfolding():
    hg = make_hourglass(features=16)
    W = stack_hourglass(hg.state_dict(), hg.config)
    stats = statistics(hg)
    mps = methods.get("mps")
    costs = mps.data_costs(W, stats)
    limits = mps.limits(tuple(W.shape))
    assert [len(c) - 1 for c in costs] == list(limits)
    for c in costs:
        assert c[0] == 1.0 and c[-1] == 0.0 and all(a >= b for a, b in zip(c, c[1:]))
    total = float(output_error(torch.zeros_like(W), W, stats)[1])
    k = 4  # the bond after f_in: the (2*2*3*2*16) x (16*3*3) unfolding, 144 values, measured at 0
    matrix = W.reshape(math.prod(W.shape[: k + 1]), -1).double()
    u, sv, vh = torch.linalg.svd(matrix, full_matrices=False)
    r = 0
    kept = ((u[:, :r] * sv[:r]) @ vh[:r]).reshape(W.shape).float()
    assert costs[k][r] == pytest.approx(float(output_error(kept, W, stats)[0]) / total)
    r = 9 * 16  # the largest value: nothing truncated
    assert costs[k][limits[k]] == 0.0 and limits[k] == r
    # A value on the measured grid (17 points over 0..144: every 9th) is measured exactly.
    r = 9
    kept = ((u[:, :r] * sv[:r]) @ vh[:r]).reshape(W.shape).float()
    assert costs[k][r] == pytest.approx(float(output_error(kept, W, stats)[0]) / total, rel=1e-4)


def test_data_without_a_target_is_refused():
    with pytest.raises(
        RankError, match="data chooses the ranks for a target; give ratio or energy"
    ):
        tcompress.convert(make_hourglass(), data=batches())


def test_cli_convert_ratio_with_data(tmp_path, small_search):
    ckpt = tmp_path / "hg.pth"
    torch.save(make_hourglass(features=16, n_joints=16).state_dict(), ckpt)
    out = tmp_path / "t.pt"
    args = ["convert", str(ckpt), "--ratio", "2", "--data", "synthetic", "--refine-samples", "2"]
    r = CliRunner().invoke(main, [*args, "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert out.exists()
    r = CliRunner().invoke(
        main, ["convert", str(ckpt), "--data", "synthetic", "-o", str(out) + "2"]
    )
    assert r.exit_code != 0
    assert "--data chooses the ranks for a target; give --ratio or --energy" in r.output


def test_a_poor_estimate_of_w_agrees_less_than_w_itself():
    from tcompress.passes.rank_search import AgreementScorer
    from tcompress.train import recalibrate_batchnorm

    hg = make_hourglass(features=16, n_joints=16).eval()
    images = batches(n=2)
    recalibrate_batchnorm(hg, images[:1])  # its statistics are those the scorer re-estimates
    hg.eval()
    before = {k: v.clone() for k, v in hg.state_dict().items()}
    keys = [StackedHourglass.block_key(i) for i, _ in hg.block_convs()]
    W = stack_hourglass(hg.state_dict(), hg.config)
    scorer = AgreementScorer(hg, keys, 4, images[:1], images[1:])
    assert scorer.images == 4
    noise = torch.randn(W.shape, generator=torch.Generator().manual_seed(0))
    poor, exact = scorer(W + 0.5 * W.std() * noise), scorer(W)
    assert exact == 1.0 and 0 <= poor < 0.9
    assert all(torch.equal(v, before[k]) for k, v in hg.state_dict().items())  # a copy is scored


def _choices(shape, ratio=2.0):
    """The Tucker method, a start, and the large modes' allocation for a ratio of ``shape``."""
    from tcompress.methods.selection import RATIO_TOLERANCE
    from tcompress.passes.rank_search import fixed_small

    tucker = methods.get("tucker")
    limits = tucker.limits(shape)
    costs = [[1.0] + [1 - r / d for r in range(1, d + 1)] for d in shape]
    before = math.prod(shape)

    def allocate_large(ranks):
        fixed = fixed_small(ranks, limits, 8)
        try:
            found = allocate(tucker, shape, None, ratio=ratio, fixed=fixed, costs=costs)
        except RankError:
            return None
        reached = before / found.tensor_params
        return found if ratio <= reached <= ratio * (1 + RATIO_TOLERANCE) else None

    return tucker, allocate(tucker, shape, None, ratio=ratio, costs=costs), allocate_large


def _mode_rank(W_hat, k):
    unfolding = W_hat.movedim(k, 0).reshape(W_hat.shape[k], -1)
    return int(torch.linalg.matrix_rank(unfolding, atol=1e-4))


def test_every_rank_set_that_meets_the_target_is_rated_and_the_best_chosen():
    from tcompress.passes.rank_search import search_ranks

    shape = (2, 3, 16, 16)
    tucker, start, allocate_large = _choices(shape)
    W = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def score(W_hat):  # prefers rank 1 in mode 1, which the costs' allocation does not pick
        return 1.0 if _mode_rank(W_hat, 1) == 1 else 0.5

    assert start.ranks[1] != 1
    chosen, report = search_ranks(tucker, W, start, allocate_large, score)
    assert chosen.criterion == "search" and chosen.ranks[1] == 1 and report.agreement == 1.0
    assert len(report.quick) > 1 and tuple(start.ranks) in report.quick
    assert report.path == [tuple(chosen.ranks)]


def test_the_search_climbs_when_too_many_rank_sets_meet_the_target(monkeypatch):
    from tcompress.passes import rank_search

    monkeypatch.setattr(rank_search, "MAX_CANDIDATES", 1)
    shape = (2, 3, 16, 16)
    tucker, start, allocate_large = _choices(shape)
    W = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def score(W_hat):  # higher for lower mode-1 ranks: two steps down from 3
        return 1.0 - 0.1 * _mode_rank(W_hat, 1)

    chosen, report = rank_search.search_ranks(tucker, W, start, allocate_large, score)
    assert chosen.ranks[1] == 1 and len(report.path) >= 2
