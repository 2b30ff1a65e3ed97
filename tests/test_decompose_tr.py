"""Tests of tcompress.decompose.tr: tensor rings by TR-SVD.

Small seeded tensors throughout. Errors are measured in float64 on explicit reconstructions.
Exact reconstructions are held to 1e-6 relative in float32 and 1e-12 in float64 (as the TT
tests); tensorly 0.10's ``tensor_ring`` (pytorch backend, float64, full SVDs) is the reference
for the errors of truncated rings.
"""

from __future__ import annotations

import math

import pytest
import tensorly as tl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorly.decomposition import tensor_ring as tl_tensor_ring

from tcompress.decompose.mps import max_tt_ranks, tensor_train
from tcompress.decompose.tr import (
    TRDecomposition,
    cap_tr_ranks,
    tensor_ring,
    tr_full_ranks,
    tr_opening,
    tr_params,
    tr_to_tensor,
)
from tcompress.errors import DecompositionError, RankError

TOL_EXACT = {torch.float32: 1e-6, torch.float64: 1e-12}
SHAPES = [(6, 7, 5), (5, 9, 4, 6), (40, 3, 5), (2, 10, 2), (2, 1, 3, 2, 6, 5, 3, 3)]
# (shape, bond ranks (R_1, ..., R_N), opening): ring bonds > 1, openings at 0, inside and last,
# an opening mode taller than the rest (4 x 6 columns), and one with R_{k-1} R_k = D_k.
RING_CASES = [
    ((6, 5, 4, 7), (2, 2, 2, 2), 3),
    ((9, 4, 5, 3), (2, 3, 2, 3), 0),
    ((2, 1, 3, 2, 6, 5, 3, 3), (2, 2, 2, 2, 2, 2, 2, 2), 4),
    ((3, 40, 2), (2, 2, 2), 1),
    ((3, 4, 5), (2, 2, 3), 1),
    ((40, 3, 5), (2, 3, 4), 0),
]


def seeded(shape, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def planted_ring(shape, ranks, dtype=torch.float64, seed=10):
    """An exact tensor ring of bond ranks ``ranks`` from random cores."""
    cores = [
        seeded((ranks[j - 1], d, ranks[j]), torch.float64, seed + j) for j, d in enumerate(shape)
    ]
    return tr_to_tensor(cores).to(dtype)


def rel_err(tensor, rebuilt):
    """``||W - W_hat|| / ||W||`` in float64."""
    w = tensor.detach().double()
    return float(
        torch.linalg.vector_norm(w - rebuilt.detach().double()) / torch.linalg.vector_norm(w)
    )


def orthonormality_gap(matrix):
    m = matrix.double()
    return float((m.T @ m - torch.eye(m.shape[1], dtype=torch.float64)).abs().max())


def tensorly_tr_error(w, ranks, mode):
    # tensorly's ranks are (R_0, R_1, ..., R_N) with R_0 = R_N.
    with tl.backend_context("pytorch"):
        factors = tl_tensor_ring(w.double(), rank=[ranks[-1], *ranks], mode=mode)
        return rel_err(w, tl.tr_to_tensor(factors))


# ------------------------------------------------------------------------------------------------
# Reconstruction
# ------------------------------------------------------------------------------------------------


def test_tr_to_tensor_is_the_trace_of_the_core_products():
    shape, ranks = (3, 4, 5, 2), (3, 2, 4, 2)
    cores = [seeded((ranks[j - 1], d, ranks[j]), torch.float64, j) for j, d in enumerate(shape)]
    expected = torch.einsum("aib,bjc,ckd,dla->ijkl", *cores)
    # The chain starts after the smallest bond (mode 1 here) and is rotated back.
    rebuilt = tr_to_tensor(cores)
    assert rebuilt.shape == shape and rebuilt.is_contiguous()
    assert torch.allclose(rebuilt, expected, rtol=0, atol=1e-12)
    one = seeded((3, 5, 3), torch.float64)
    assert torch.allclose(tr_to_tensor([one]), torch.einsum("aia->i", one), atol=1e-14)
    pair = [seeded((2, 4, 3), torch.float64, 1), seeded((3, 5, 2), torch.float64, 2)]
    assert torch.allclose(tr_to_tensor(pair), torch.einsum("aib,bja->ij", *pair), atol=1e-13)


def test_tr_to_tensor_is_differentiable():
    shape, ranks = (3, 4, 2), (2, 3, 2)
    cores = tuple(
        seeded((ranks[j - 1], d, ranks[j]), torch.float64, j).requires_grad_(True)
        for j, d in enumerate(shape)
    )
    (tr_to_tensor(cores) * seeded(shape, torch.float64, 7)).sum().backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in cores)
    assert torch.autograd.gradcheck(lambda *c: tr_to_tensor(c), cores, fast_mode=True)


def test_tr_to_tensor_bad_cores():
    with pytest.raises(RankError, match="without cores"):
        tr_to_tensor([])
    with pytest.raises(RankError, match="TR core 0 has left rank 2 but core 1 has right rank 3"):
        tr_to_tensor([torch.zeros(2, 4, 3), torch.zeros(3, 5, 3)])
    with pytest.raises(RankError, match=r"TR core 0 has shape \(4, 3\)"):
        tr_to_tensor([torch.zeros(4, 3)])


# ------------------------------------------------------------------------------------------------
# Ranks: parameters, opening, caps, full ranks
# ------------------------------------------------------------------------------------------------


def test_tr_params_matches_the_cores():
    assert tr_params((3, 4, 5), (2, 3, 4)) == 4 * 3 * 2 + 2 * 4 * 3 + 3 * 5 * 4
    assert tr_params((7,), (1,)) == 7
    for shape, ranks, _ in RING_CASES:
        result = tensor_ring(seeded(shape), ranks)
        assert tr_params(shape, ranks) == sum(c.numel() for c in result.cores)


def test_opening_is_the_largest_mode_that_fits():
    shape = (2, 1, 3, 2, 6, 5, 3, 3)
    assert tr_opening(shape, (2,) * 8) == 4  # modes 4 (size 6) and 5 (size 5) hold 2 x 2
    assert tr_opening(shape, (2, 2, 2, 4, 2, 2, 2, 2)) == 5  # mode 4 would need 4 x 2 <= 6
    assert tr_opening((5, 3, 5), (2, 2, 2)) == 0  # a tie: the first
    assert tr_opening((3, 5, 5), (2, 2, 2)) == 1
    assert tr_opening((2, 10, 2), (2, 2, 2)) == 1


def test_a_bond_of_one_opens_the_ring_after_it():
    # With R_N = 1 the ring is a train: TR-SVD opens it at mode 0 even though the larger mode 1
    # holds its bonds too (opening there would cut the train in the middle of the sweep).
    assert tr_opening((2, 10, 2), (2, 2, 1)) == 0
    assert tr_opening((2, 1, 3, 2, 6, 5, 3, 3), (2, 2, 2, 2, 4, 1, 2, 2)) == 6
    # The mode after the bond of 1 must still hold its other bond: 3 > D_0 = 2.
    assert tr_opening((2, 10, 2), (3, 2, 1)) == 2


def test_no_mode_can_open_the_ring():
    message = (
        r"TR bond ranks \(3, 3, 3\) cannot open the ring at any mode of shape \(6, 7, 5\): a mode "
        r"k must hold R_\(k-1\) x R_k <= min\(D_k, product of the other sizes\), but even the "
        r"largest, mode 1 \(size 7\), holds at most 7 and its bonds 1 and 2 give 3 x 3 = 9"
    )
    with pytest.raises(RankError, match=message):
        tr_opening((6, 7, 5), (3, 3, 3))
    with pytest.raises(RankError, match="cannot open the ring"):
        cap_tr_ranks((6, 7, 5), (3, 3, 3))
    with pytest.raises(RankError, match="cannot open the ring"):
        tensor_ring(seeded((6, 7, 5)), (3, 3, 3))


def test_full_ranks():
    assert tr_full_ranks((4, 4, 3, 2, 128, 128, 3, 3)) == (4, 16, 48, 96, 1152, 9, 3, 1)
    assert tr_full_ranks((2, 3)) == (2, 1)
    assert tr_full_ranks((7,)) == (1,)
    for shape in SHAPES:
        full = tr_full_ranks(shape)
        assert full == (*max_tt_ranks(shape), 1)
        assert tr_opening(shape, full) == 0
        assert cap_tr_ranks(shape, full) == (full, ())


def test_cap_notes():
    shape = (2, 1, 3, 2, 6, 5, 3, 3)
    ranks, notes = cap_tr_ranks(shape, (40, 40, 40, 2, 2, 40, 40, 40))
    # Opened at mode 4 (bonds 4 and 5, 2 x 2 <= 6); the sweep runs 5, 6, 7, 0, 1, 2, 3 with the
    # ring bond 4 (R = 2) riding along with mode 3.
    assert tr_opening(shape, ranks) == 4
    assert ranks == (12, 12, 4, 2, 2, 10, 30, 24)
    assert notes == (
        "bond 1: 40 capped at 12 (bond 4 x modes 1..3 = 2 x 6)",
        "bond 2: 40 capped at 12 (bond 1 x 1)",
        "bond 3: 40 capped at 4 (bond 4 x mode 3 = 2 x 2)",
        "bond 6: 40 capped at 10 (bond 5 x 5)",
        "bond 7: 40 capped at 30 (bond 6 x 3)",
        "bond 8: 40 capped at 24 (bond 4 x modes 0..3 = 2 x 12)",
    )
    assert cap_tr_ranks(shape, ranks) == (ranks, ())
    result = tensor_ring(seeded(shape), ranks)
    assert result.ranks == ranks and result.opening == 4
    # A cap of the columns around the end of the ring: opened at mode 1, the sweep 2, 3, 4, 0.
    assert cap_tr_ranks((3, 9, 3, 6, 2), (2, 3, 4, 40, 2)) == (
        (2, 3, 4, 12, 2),
        ("bond 4: 40 capped at 12 (bond 1 x modes 4, 0 = 2 x 6)",),
    )


def test_caps_that_move_the_opening():
    # Opened at mode 3 first; capping bond 2 at 2 lets mode 1 (left bond 1) open the ring, and
    # the sweep from mode 1 caps bond 5.
    shape, given_ranks = (9, 2, 5, 16, 5), (1, 6, 3, 4, 40)
    assert tr_opening(shape, given_ranks) == 3
    ranks, notes = cap_tr_ranks(shape, given_ranks)
    assert ranks == (1, 2, 3, 4, 9)
    assert notes == (
        "bond 2: 6 capped at 2 (bond 1 x 2)",
        "bond 5: 40 capped at 9 (bond 1 x mode 0 = 1 x 9)",
    )
    assert tr_opening(shape, ranks) == 1
    assert tensor_ring(seeded(shape), ranks).opening == 1


def test_capped_train_is_exact():
    # R_N = 1 and every other bond at its cap: the caps are the maximal TT ranks.
    shape = (2, 1, 3, 2, 6, 5, 3, 3)
    ranks, notes = cap_tr_ranks(shape, (2, *[10**6] * 6, 1))
    assert ranks == tr_full_ranks(shape)
    assert len(notes) == 6 and notes[0] == "bond 2: 1000000 capped at 2 (bond 1 x 1)"
    w = seeded(shape)
    assert rel_err(w, tr_to_tensor(tensor_ring(w, ranks).cores)) < TOL_EXACT[torch.float32]


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    data=st.data(),
)
def test_capped_ranks_are_accepted(shape, data):
    shape = tuple(shape)
    ranks = tuple(
        data.draw(st.sampled_from([1, 1, 2, 3, 4, 6, 40]), label=f"R_{j + 1}")
        for j in range(len(shape))
    )
    try:
        capped, notes = cap_tr_ranks(shape, ranks)
    except RankError as error:
        assert "cannot open the ring" in str(error)
        return
    assert all(1 <= c <= r for c, r in zip(capped, ranks))
    assert len(notes) == sum(c != r for c, r in zip(capped, ranks))
    assert cap_tr_ranks(shape, capped) == (capped, ())
    w = seeded(shape, torch.float64)
    result = tensor_ring(w, capped)
    assert result.ranks == capped and result.opening == tr_opening(shape, capped)
    assert rel_err(w, tr_to_tensor(result.cores)) == pytest.approx(result.relative_error, abs=1e-9)


@pytest.mark.parametrize(
    ("ranks", "match"),
    [
        ((2, 2), r"got 2 TR bond rank\(s\) \(2, 2\) for a tensor of order 3; expected 3 "),
        ((2, 0, 2), "TR bond rank 2 is 0; expected an integer >= 1"),
        ((2, "a", 2), "TR bond rank 2 is 'a'; expected an integer >= 1"),
        ((2, 2.0, 2), "TR bond rank 2 is 2.0; expected an integer >= 1"),
        ((True, 2, 2), "TR bond rank 1 is True; expected an integer >= 1"),
        ("2,2,2", "TR ranks '2,2,2' are not a sequence of integers; expected 3 bond ranks"),
        (
            (2, 2, 40),
            r"TR bond rank 3 \(between modes 2 and 0\) is 40, above its cap 10 \(bond 2 x 5\) "
            r"for shape \(6, 7, 5\) with the ring opened at mode 1; cap the ranks with "
            r"cap_tr_ranks",
        ),
    ],
)
def test_bad_ranks(ranks, match):
    with pytest.raises(RankError, match=match):
        tensor_ring(seeded((6, 7, 5)), ranks)
    if ranks != (2, 2, 40):
        for check in (tr_opening, cap_tr_ranks, tr_params):
            with pytest.raises(RankError, match=match):
                check((6, 7, 5), ranks)


# ------------------------------------------------------------------------------------------------
# TR-SVD
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_full_rank_reconstructs_exactly(shape, dtype):
    w = seeded(shape, dtype)
    result = tensor_ring(w, tr_full_ranks(shape))
    assert isinstance(result, TRDecomposition)
    assert result.opening == 0 and result.ranks == tr_full_ranks(shape)
    assert rel_err(w, tr_to_tensor(result.cores)) < TOL_EXACT[dtype]
    assert 0.0 <= result.relative_error < TOL_EXACT[dtype]
    assert all(c.dtype == dtype for c in result.cores)


@pytest.mark.parametrize(
    ("shape", "tt_ranks"),
    [
        ((2, 3, 2, 2, 8, 8, 3, 3), (2, 6, 12, 10, 9, 9, 3)),
        ((5, 9, 4, 6), (5, 12, 4)),
        ((6, 7, 5), (4, 3)),
    ],
)
def test_ring_bond_one_is_the_tensor_train(shape, tt_ranks):
    w = seeded(shape)
    train = tensor_train(w, tt_ranks)
    ring = tensor_ring(w, (*tt_ranks, 1))
    assert ring.opening == 0
    assert ring.relative_error == train.relative_error
    assert all(torch.equal(a, b) for a, b in zip(ring.cores, train.cores))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "ranks", "opening"), RING_CASES)
def test_truncated_ring_matches_tensorly(shape, ranks, opening, dtype):
    for w in (seeded(shape, dtype), planted_ring(shape, ranks, dtype)):
        result = tensor_ring(w, ranks)
        assert result.opening == opening
        tol = 1e-5 if dtype == torch.float32 else 1e-9
        assert result.relative_error == pytest.approx(tensorly_tr_error(w, ranks, opening), abs=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "ranks", "opening"), RING_CASES)
def test_reported_error_and_orthonormal_cores(shape, ranks, opening, dtype):
    n = len(shape)
    result = tensor_ring(seeded(shape, dtype), ranks)
    explicit = rel_err(seeded(shape, dtype), tr_to_tensor(result.cores))
    assert abs(result.relative_error - explicit) <= (1e-6 if dtype == torch.float32 else 1e-12)
    for j, core in enumerate(result.cores):
        assert core.shape == (ranks[j - 1], shape[j], ranks[j]) and core.dtype == dtype
    k = result.opening
    first = result.cores[k].transpose(0, 1).reshape(shape[k], -1)
    assert orthonormality_gap(first) < 1e-5
    for step in range(1, n - 1):
        core = result.cores[(k + step) % n]
        assert orthonormality_gap(core.reshape(-1, core.shape[2])) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "ranks", "opening"), RING_CASES[:3])
def test_planted_ring_is_recovered(shape, ranks, opening, dtype):
    # TR-SVD recovers an exact ring once the sweep's bonds have room for the mixing of the two
    # opening bonds in the first SVD: R_j min(R_{k-1}, R_k)^2 (capped). At the planted ranks
    # themselves it is not exact (test_truncated_ring_matches_tensorly covers that case).
    w = planted_ring(shape, ranks, dtype)
    k = opening
    room = min(ranks[k - 1], ranks[k]) ** 2
    wide = [r if j in (k, (k - 1) % len(shape)) else r * room for j, r in enumerate(ranks)]
    wide, _ = cap_tr_ranks(shape, wide)
    result = tensor_ring(w, wide)
    assert result.opening == k
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert result.relative_error < tol
    assert rel_err(w, tr_to_tensor(result.cores)) < tol


def test_order_one_and_two():
    v = seeded((6,), torch.float64)
    result = tensor_ring(v, (1,))
    assert [tuple(c.shape) for c in result.cores] == [(1, 6, 1)]
    assert result.relative_error == 0.0 and torch.equal(tr_to_tensor(result.cores), v)
    m = seeded((6, 8), torch.float64)
    s = torch.linalg.svdvals(m)
    # For a matrix, TR-SVD is the truncated SVD of rank R_1 R_2.
    result = tensor_ring(m, (2, 2))
    assert result.opening == 1
    expected = math.sqrt(float((s[4:] ** 2).sum() / (s**2).sum()))
    assert result.relative_error == pytest.approx(expected, abs=1e-12)
    assert rel_err(m, tr_to_tensor(result.cores)) == pytest.approx(expected, abs=1e-12)


def test_cores_do_not_alias_the_input():
    for w, ranks in (
        (seeded((1, 3)), (1, 1)),
        (seeded((3, 4)), (3, 1)),
        (seeded((2, 3, 4)), (2, 3, 1)),
    ):
        kept = w.clone()
        result = tensor_ring(w, ranks)
        for core in result.cores:
            core.zero_()
        assert torch.equal(w, kept)


def test_zero_and_extreme_tensors():
    zero = tensor_ring(torch.zeros(3, 4, 5), (2, 2, 1))
    assert zero.relative_error == 0.0
    assert all(torch.isfinite(c).all() for c in zero.cores)
    # Squares of entries of 1e200 overflow float64: the tensor is scaled by a power of two first.
    w = seeded((3, 4, 5), torch.float64) * 1e200
    result = tensor_ring(w, tr_full_ranks(w.shape))
    assert result.relative_error < 1e-12
    assert rel_err(w / 1e200, tr_to_tensor(result.cores) / 1e200) < 1e-12
    small = seeded((3, 4, 5)) * 1e-30
    result = tensor_ring(small, (2, 2, 2))
    assert result.relative_error == pytest.approx(
        tensor_ring(small * 1e30, (2, 2, 2)).relative_error, abs=1e-6
    )


def test_bad_tensors():
    with pytest.raises(DecompositionError, match="tensor has dtype torch.int64"):
        tensor_ring(torch.zeros(3, 4, dtype=torch.int64), (1, 1))
    with pytest.raises(DecompositionError, match="tensor is a list"):
        tensor_ring([[1.0, 2.0]], (1, 1))
    for bad in (float("nan"), float("inf")):
        w = seeded((3, 4, 5))
        w[1, 2, 3] = bad
        with pytest.raises(DecompositionError, match=r"shape \(3, 4, 5\) has NaN or infinite"):
            tensor_ring(w, (1, 2, 3))
    with pytest.raises(RankError, match="0-dimensional"):
        tensor_ring(torch.tensor(1.0), ())
