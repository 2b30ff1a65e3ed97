"""Tests of tcompress.decompose: Tucker (HOSVD / HOOI) and tensor train (TT-SVD).

Small seeded tensors throughout; tensorly 0.10 (pytorch backend, in a context manager) is the
reference for the relative errors. Errors are always measured in float64 on explicit
reconstructions (a float32 norm of millions of entries is not accurate enough to compare).
"""

from __future__ import annotations

import math

import pytest
import tensorly as tl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorly.decomposition import tensor_train as tl_tensor_train
from tensorly.decomposition import tucker as tl_tucker

from tcompress.decompose import (
    MPSDecomposition,
    TuckerDecomposition,
    max_tt_ranks,
    tensor_train,
    tt_to_tensor,
    tucker,
    tucker_to_tensor,
)
from tcompress.decompose._grams import block_mode_grams, summed_row_gram
from tcompress.decompose._products import multi_mode_product
from tcompress.errors import DecompositionError, RankError
from tcompress.stacking import stack_kernels

# (shape, Tucker ranks): paper-like 8-way, 3-way and 4-way, a mode wider than the rest of the
# tensor (column-Gram path), a short trailing extent (chunked Gram path) and a mode > 128.
TUCKER_CASES = [
    ((2, 3, 2, 2, 8, 8, 3, 3), (2, 2, 2, 1, 4, 5, 2, 3)),
    ((6, 7, 5), (3, 4, 2)),
    ((5, 9, 4, 6), (2, 5, 3, 4)),
    ((40, 3, 5), (6, 2, 3)),
    ((3, 30, 40, 3), (2, 10, 12, 2)),
    ((2, 150, 3), (2, 20, 2)),
]
TT_CASES = [
    ((2, 3, 2, 2, 8, 8, 3, 3), (2, 6, 12, 10, 9, 9, 3)),
    ((6, 7, 5), (4, 3)),
    ((5, 9, 4, 6), (5, 12, 4)),
    ((40, 3, 5), (10, 4)),
    ((3, 30, 40, 3), (3, 20, 3)),
]


def seeded(shape, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


def orthonormal(rows, cols, seed):
    q, _ = torch.linalg.qr(seeded((rows, cols), torch.float64, seed))
    return q


def low_rank_plus_noise(shape, ranks, dtype=torch.float32, noise=0.05, seed=0):
    """A planted Tucker tensor with multilinear ranks ``ranks`` plus Gaussian noise."""
    core = seeded(ranks, torch.float64, seed)
    factors = [orthonormal(d, r, seed + 1 + k) for k, (d, r) in enumerate(zip(shape, ranks))]
    clean = tucker_to_tensor(core, factors)
    clean = clean / torch.linalg.vector_norm(clean)
    perturbation = seeded(shape, torch.float64, seed + 100)
    w = clean + noise * perturbation / torch.linalg.vector_norm(perturbation)
    return w.to(dtype)


def rel_err(tensor, rebuilt):
    """``||W - W_hat|| / ||W||`` in float64."""
    w = tensor.detach().double()
    return float(
        torch.linalg.vector_norm(w - rebuilt.detach().double()) / torch.linalg.vector_norm(w)
    )


def orthonormality_gap(matrix):
    m = matrix.double()
    return float((m.T @ m - torch.eye(m.shape[1], dtype=torch.float64)).abs().max())


def tensorly_tucker_error(w, ranks):
    with tl.backend_context("pytorch"):
        result = tl_tucker(w, rank=list(ranks), n_iter_max=0, init="svd")
        return rel_err(w, tl.tucker_to_tensor(result))


def tensorly_tt_error(w, ranks):
    with tl.backend_context("pytorch"):
        result = tl_tensor_train(w, rank=[1, *ranks, 1])
        return rel_err(w, tl.tt_to_tensor(result))


TOL_EXACT = {torch.float32: 1e-6, torch.float64: 1e-12}


# ------------------------------------------------------------------------------------------------
# Tucker
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [case[0] for case in TUCKER_CASES])
def test_tucker_full_rank_reconstructs_exactly(shape, dtype):
    w = seeded(shape, dtype)
    result = tucker(w, shape)
    assert isinstance(result, TuckerDecomposition)
    assert rel_err(w, tucker_to_tensor(result.core, result.factors)) < TOL_EXACT[dtype]
    assert 0.0 <= result.relative_error < TOL_EXACT[dtype]


@pytest.mark.filterwarnings("ignore:Trying to compute SVD with n_eigenvecs")
@pytest.mark.parametrize("kind", ["random", "low_rank_plus_noise"])
@pytest.mark.parametrize(("shape", "ranks"), TUCKER_CASES)
def test_tucker_error_matches_tensorly(shape, ranks, kind):
    if kind == "random":
        w = seeded(shape)
    else:
        w = low_rank_plus_noise(shape, ranks)
    ours = tucker(w, ranks)
    assert abs(ours.relative_error - tensorly_tucker_error(w, ranks)) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "ranks"), TUCKER_CASES)
def test_tucker_reported_error_is_the_explicit_error(shape, ranks, dtype):
    # Random (large error) and nearly exact (small error: the cancellation-safe path).
    for w in (seeded(shape, dtype), low_rank_plus_noise(shape, ranks, dtype, noise=1e-3)):
        result = tucker(w, ranks)
        explicit = rel_err(w, tucker_to_tensor(result.core, result.factors))
        assert abs(result.relative_error - explicit) <= (1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize(("shape", "ranks"), TUCKER_CASES)
def test_tucker_shapes_and_orthonormal_factors(shape, ranks):
    result = tucker(seeded(shape), ranks)
    assert tuple(result.core.shape) == ranks
    assert [tuple(f.shape) for f in result.factors] == list(zip(shape, ranks))
    for factor in result.factors:
        assert orthonormality_gap(factor) < 1e-6
    assert result.errors == [result.relative_error]


@pytest.mark.parametrize(("shape", "ranks"), TUCKER_CASES)
def test_hosvd_factors_span_leading_singular_vectors(shape, ranks):
    w = seeded(shape, torch.float64)
    result = tucker(w, ranks)
    for k, (factor, r) in enumerate(zip(result.factors, ranks)):
        unfolding = w.movedim(k, 0).reshape(shape[k], -1)
        u, s, _ = torch.linalg.svd(unfolding, full_matrices=False)
        if r >= len(s):
            # More columns than the unfolding's rank: the factor must contain its whole range.
            assert torch.allclose(factor @ (factor.T @ u), u, atol=1e-9)
            continue
        if s[r - 1] - s[r] < 1e-6 * s[0]:
            continue  # no spectral gap: the subspace is not unique
        reference = u[:, :r] @ u[:, :r].T
        assert torch.allclose(factor @ factor.T, reference, atol=1e-9)


def test_tucker_core_is_projection_of_tensor():
    shape, ranks = TUCKER_CASES[0]
    w = seeded(shape, torch.float64)
    result = tucker(w, ranks)
    core = w
    for factor in result.factors:
        # Contracting the leading mode and appending the result cycles through all modes.
        core = torch.tensordot(core, factor, dims=([0], [0]))
    assert core.shape == result.core.shape
    assert torch.allclose(core, result.core, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "ranks"), TUCKER_CASES[:4])
def test_hooi_errors_monotone(shape, ranks, dtype):
    w = seeded(shape, dtype, seed=3)
    hosvd = tucker(w, ranks)
    result = tucker(w, ranks, n_iter=4)
    assert len(result.errors) == 5
    assert result.errors[0] == pytest.approx(hosvd.relative_error, abs=1e-12)
    assert all(b <= a for a, b in zip(result.errors, result.errors[1:]))
    assert result.relative_error == result.errors[-1] <= hosvd.relative_error
    explicit = rel_err(w, tucker_to_tensor(result.core, result.factors))
    assert abs(result.relative_error - explicit) <= (1e-6 if dtype == torch.float32 else 1e-12)
    for factor in result.factors:
        assert orthonormality_gap(factor) < 1e-5


def test_hooi_improves_over_hosvd():
    w = seeded((6, 7, 5), torch.float64, seed=4)
    result = tucker(w, (2, 2, 2), n_iter=10)
    assert result.errors[-1] < result.errors[0] - 1e-4


def test_hooi_keeps_exact_decomposition_exact():
    w = low_rank_plus_noise((5, 9, 4, 6), (2, 3, 2, 3), torch.float64, noise=0.0)
    result = tucker(w, (2, 3, 2, 3), n_iter=3)
    assert max(result.errors) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tucker_preserves_dtype_and_device(dtype):
    w = seeded((2, 3, 2, 2, 8, 8, 3, 3), dtype)
    result = tucker(w, (2, 2, 2, 1, 4, 5, 2, 3), n_iter=1)
    for t in (result.core, *result.factors):
        assert t.dtype == dtype
        assert t.device == w.device
    assert tucker_to_tensor(result.core, result.factors).dtype == dtype
    assert isinstance(result.relative_error, float)
    assert all(isinstance(e, float) for e in result.errors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tucker_and_tt_on_cuda():
    w = seeded((2, 3, 2, 2, 8, 8, 3, 3)).cuda()
    result = tucker(w, (2, 2, 2, 1, 4, 5, 2, 3))
    assert all(t.is_cuda for t in (result.core, *result.factors))
    cores = tensor_train(w, (2, 6, 12, 10, 9, 9, 3)).cores
    assert all(c.is_cuda for c in cores)


def test_tucker_does_not_track_gradients():
    w = seeded((6, 7, 5)).requires_grad_(True)
    result = tucker(w, (3, 4, 2), n_iter=1)
    assert not result.core.requires_grad
    assert not any(f.requires_grad for f in result.factors)


@pytest.mark.parametrize(
    ("shape", "ranks"),
    [((6, 7, 5), (3, 4, 2)), ((3, 70, 4, 2), (2, 5, 3, 2)), ((2, 3, 2), (2, 2, 1))],
)
def test_tucker_to_tensor_is_differentiable(shape, ranks):
    core = seeded(ranks, torch.float64, 1).requires_grad_(True)
    factors = [
        orthonormal(d, r, 2 + k).clone().requires_grad_(True)
        for k, (d, r) in enumerate(zip(shape, ranks))
    ]
    rebuilt = tucker_to_tensor(core, factors)
    assert rebuilt.shape == shape
    (rebuilt * seeded(shape, torch.float64, 9)).sum().backward()
    for t in (core, *factors):
        assert t.grad is not None and t.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(
        lambda c, *f: tucker_to_tensor(c, f), (core, *factors), fast_mode=True
    )


@pytest.mark.parametrize(("shape", "ranks"), TUCKER_CASES)
def test_planted_tucker_tensor_is_recovered(shape, ranks):
    w = low_rank_plus_noise(shape, ranks, torch.float64, noise=0.0)
    assert tucker(w, ranks).relative_error < 1e-12
    w32 = w.float()
    result = tucker(w32, ranks)
    assert result.relative_error < 1e-5
    assert rel_err(w32, tucker_to_tensor(result.core, result.factors)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_deficient_tensor_stays_finite(dtype):
    shape = (2, 3, 2, 2, 8, 8, 3, 3)
    w = seeded(shape, dtype)
    w[:, 1] = 0.0  # a zero slice: mode 1 has rank 2 < 3
    w[..., 0, :] = 0.0  # and mode 6 has rank 2 < 3
    full = tucker(w, shape, n_iter=1)
    assert all(torch.isfinite(t).all() for t in (full.core, *full.factors))
    assert rel_err(w, tucker_to_tensor(full.core, full.factors)) < TOL_EXACT[dtype]
    for factor in full.factors:
        assert orthonormality_gap(factor) < 1e-6
    truncated = tucker(w, (2, 3, 2, 1, 4, 5, 3, 3), n_iter=2)
    assert all(torch.isfinite(t).all() for t in (truncated.core, *truncated.factors))
    assert math.isfinite(truncated.relative_error)


@pytest.mark.parametrize("magnitude", [1e-30, 1e25])
def test_extreme_magnitudes(magnitude):
    w = seeded((5, 9, 4, 6))
    reference_tucker = tucker(w, (2, 5, 3, 4)).relative_error
    reference_tt = tensor_train(w, (5, 12, 4)).relative_error
    scaled = w * magnitude
    result = tucker(scaled, (2, 5, 3, 4), n_iter=1)
    assert result.errors[0] == pytest.approx(reference_tucker, abs=1e-6)
    assert rel_err(scaled, tucker_to_tensor(result.core, result.factors)) == pytest.approx(
        result.relative_error, abs=1e-6
    )
    mps = tensor_train(scaled, (5, 12, 4))
    assert mps.relative_error == pytest.approx(reference_tt, abs=1e-6)
    assert rel_err(scaled, tt_to_tensor(mps.cores)) == pytest.approx(mps.relative_error, abs=1e-6)


def test_zero_tensor():
    w = torch.zeros(4, 5, 6)
    result = tucker(w, (2, 3, 4), n_iter=2)
    assert result.relative_error == 0.0 and result.errors == [0.0, 0.0, 0.0]
    assert torch.isfinite(result.core).all()
    mps = tensor_train(w, (2, 3))
    assert mps.relative_error == 0.0
    assert all(torch.isfinite(c).all() for c in mps.cores)


def test_tucker_order_one_and_two():
    v = seeded((7,), torch.float64)
    assert tucker(v, (1,)).relative_error < 1e-12
    m = seeded((5, 8), torch.float64)
    result = tucker(m, (2, 2))
    s = torch.linalg.svdvals(m)
    # For a matrix, the HOSVD is the truncated SVD.
    expected = math.sqrt(float((s[2:] ** 2).sum() / (s**2).sum()))
    assert result.relative_error == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("ranks", "match"),
    [((2, 2), "order 3"), ((2, 0, 2), "mode 1"), ((2, 2, 9), "mode 2 \\(size 5\\)")],
)
def test_tucker_bad_ranks(ranks, match):
    with pytest.raises(RankError, match=match):
        tucker(seeded((3, 4, 5)), ranks)


def test_tucker_bad_input():
    with pytest.raises(DecompositionError, match="tensor has dtype torch.int64"):
        tucker(torch.zeros(3, 4, dtype=torch.int64), (1, 1))
    with pytest.raises(ValueError):
        tucker(seeded((3, 4)), (1, 1), n_iter=-1)


# ------------------------------------------------------------------------------------------------
# Tensor train
# ------------------------------------------------------------------------------------------------


def test_max_tt_ranks():
    assert max_tt_ranks((4, 4, 3, 2, 128, 128, 3, 3)) == (4, 16, 48, 96, 1152, 9, 3)
    assert max_tt_ranks((2, 3)) == (2,)
    assert max_tt_ranks((3, 100, 2)) == (3, 2)
    assert max_tt_ranks((7,)) == ()
    assert max_tt_ranks([2, 2, 2, 2]) == (2, 4, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [case[0] for case in TT_CASES])
def test_tt_full_rank_reconstructs_exactly(shape, dtype):
    w = seeded(shape, dtype)
    result = tensor_train(w, max_tt_ranks(shape))
    assert isinstance(result, MPSDecomposition)
    assert rel_err(w, tt_to_tensor(result.cores)) < TOL_EXACT[dtype]
    assert 0.0 <= result.relative_error < TOL_EXACT[dtype]


@pytest.mark.parametrize("kind", ["random", "low_rank_plus_noise"])
@pytest.mark.parametrize(("shape", "ranks"), TT_CASES)
def test_tt_error_matches_tensorly(shape, ranks, kind):
    if kind == "random":
        w = seeded(shape)
    else:
        w = low_rank_plus_noise(shape, tuple(max(1, d // 2) for d in shape))
    ours = tensor_train(w, ranks)
    assert abs(ours.relative_error - tensorly_tt_error(w, ranks)) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "ranks"), TT_CASES)
def test_tt_reported_error_and_left_orthogonal_cores(shape, ranks, dtype):
    for w in (seeded(shape, dtype), low_rank_plus_noise(shape, shape, dtype, noise=0.0)):
        result = tensor_train(w, ranks)
        explicit = rel_err(w, tt_to_tensor(result.cores))
        assert abs(result.relative_error - explicit) <= (1e-6 if dtype == torch.float32 else 1e-12)
        cores = result.cores
        assert len(cores) == len(shape)
        assert cores[0].shape[0] == 1 and cores[-1].shape[-1] == 1
        for k, core in enumerate(cores):
            assert core.shape[1] == shape[k]
            assert core.dtype == dtype
            if k + 1 < len(cores):
                assert core.shape[2] == cores[k + 1].shape[0] <= ranks[k]
                assert orthonormality_gap(core.reshape(-1, core.shape[2])) < 1e-5


def test_tt_ranks_are_used_when_available():
    shape, ranks = TT_CASES[0]
    cores = tensor_train(seeded(shape), ranks).cores
    assert [c.shape[2] for c in cores[:-1]] == list(ranks)


def test_tt_rank_capped_by_previous_truncation():
    # Bond 2 asks for 4 but the unfolding after bond 1 (rank 1) has only 1 * 2 = 2 rows.
    w = seeded((4, 2, 4), torch.float64)
    result = tensor_train(w, (1, 4))
    assert [tuple(c.shape) for c in result.cores] == [(1, 4, 1), (1, 2, 2), (2, 4, 1)]
    assert abs(result.relative_error - tensorly_tt_error(w, (1, 4))) < 1e-12


def test_planted_tt_tensor_is_recovered():
    shape, ranks = (3, 4, 5, 4, 3), (2, 3, 3, 2)
    bonds = (1, *ranks, 1)
    cores = [
        seeded((bonds[k], d, bonds[k + 1]), torch.float64, 10 + k) for k, d in enumerate(shape)
    ]
    w = tt_to_tensor(cores)
    assert tensor_train(w, ranks).relative_error < 1e-12
    result = tensor_train(w.float(), ranks)
    assert result.relative_error < 1e-5
    assert rel_err(w, tt_to_tensor(result.cores)) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tt_rank_deficient_tensor_stays_finite(dtype):
    shape = (2, 3, 2, 2, 8, 8, 3, 3)
    w = seeded(shape, dtype)
    w[:, :, :, :, 2] = 0.0
    w[..., 1] = 0.0
    full = tensor_train(w, max_tt_ranks(shape))
    assert all(torch.isfinite(c).all() for c in full.cores)
    assert rel_err(w, tt_to_tensor(full.cores)) < TOL_EXACT[dtype]
    truncated = tensor_train(w, (2, 6, 12, 10, 9, 9, 3))
    assert all(torch.isfinite(c).all() for c in truncated.cores)
    assert math.isfinite(truncated.relative_error)


def test_tt_to_tensor_is_differentiable():
    shape, bonds = (3, 4, 5), (1, 2, 3, 1)
    cores = [
        seeded((bonds[k], d, bonds[k + 1]), torch.float64, k).requires_grad_(True)
        for k, d in enumerate(shape)
    ]
    rebuilt = tt_to_tensor(cores)
    assert rebuilt.shape == shape
    (rebuilt * seeded(shape, torch.float64, 7)).sum().backward()
    for core in cores:
        assert core.grad is not None and core.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda *c: tt_to_tensor(c), tuple(cores), fast_mode=True)


def test_tt_order_one():
    v = seeded((6,))
    result = tensor_train(v, ())
    assert [tuple(c.shape) for c in result.cores] == [(1, 6, 1)]
    assert result.relative_error == 0.0


def test_tt_cores_do_not_alias_the_input():
    w = seeded((2, 3))
    cores = tensor_train(w, (2,)).cores  # identity first core: the remainder is the input itself
    w.zero_()
    assert tt_to_tensor(cores).abs().sum() > 0


@pytest.mark.parametrize(
    ("ranks", "match"),
    [((2,), "expected 2 internal"), ((3, 0), "bond 2"), ((4, 2), "bond 1 .* between 1 and 3")],
)
def test_tt_bad_ranks(ranks, match):
    with pytest.raises(RankError, match=match):
        tensor_train(seeded((3, 4, 5)), ranks)


def test_tt_does_not_track_gradients():
    w = seeded((3, 4, 5)).requires_grad_(True)
    assert not any(c.requires_grad for c in tensor_train(w, (2, 3)).cores)


# ------------------------------------------------------------------------------------------------
# Kernels and properties
# ------------------------------------------------------------------------------------------------


def _naive_multi_mode(tensor, matrices):
    out = tensor
    for k, m in enumerate(matrices):
        if m is not None:
            out = torch.movedim(torch.tensordot(out, m, dims=([k], [0])), -1, k)
    return out


shape_strategy = st.lists(st.integers(1, 7), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
@given(shape=shape_strategy, data=st.data())
def test_multi_mode_product_matches_naive(shape, data):
    tensor = seeded(shape, torch.float64, 0)
    matrices = []
    for k, d in enumerate(shape):
        if data.draw(st.booleans()):
            matrices.append(None)
        else:
            matrices.append(seeded((d, data.draw(st.integers(1, 8))), torch.float64, 1 + k))
    expected = _naive_multi_mode(tensor, matrices)
    assert torch.allclose(multi_mode_product(tensor, matrices), expected, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 2, 2, 8, 8, 3, 3), (3, 200, 9), (1, 5, 1), (7, 2, 3)])
def test_block_mode_grams(shape):
    w = seeded(shape, torch.float64)
    grams = block_mode_grams(w, range(len(shape)))
    for k in range(len(shape)):
        unfolding = w.movedim(k, 0).reshape(shape[k], -1)
        assert torch.allclose(grams[k], unfolding @ unfolding.T, atol=1e-10)


def test_summed_row_gram_is_the_f_out_gram_of_the_stacked_kernels():
    kernels = [seeded((6, 5, 3, 3), torch.float64, seed) for seed in range(4)]
    w = stack_kernels(kernels, (2, 2))
    rows = [k.reshape(6, -1) for k in kernels]
    assert torch.allclose(summed_row_gram(rows), block_mode_grams(w, [3])[3], atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tucker_with_a_given_gram_matches_its_own(dtype):
    w = seeded((3, 4, 10, 9, 3, 3), dtype)
    ranks = (2, 3, 6, 5, 2, 3)
    unfolding = w.movedim(3, 0).reshape(9, -1)
    given = tucker(w, ranks, grams={3: unfolding @ unfolding.T})
    own = tucker(w, ranks)
    assert abs(given.relative_error - own.relative_error) <= 1e-6
    for u, v in zip(given.factors, own.factors):  # the same span in every mode
        assert torch.allclose(u @ u.T, v @ v.T, atol=1e-5)


def test_tucker_refuses_a_gram_of_the_wrong_shape():
    w = seeded((4, 5, 6))
    with pytest.raises(DecompositionError, match=r"the Gram given for mode 1 has shape \(4, 4\)"):
        tucker(w, (2, 2, 2), grams={1: torch.eye(4)})


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data())
def test_property_random_shapes_and_ranks(shape, data):
    w = seeded(shape, torch.float64, data.draw(st.integers(0, 1000)))
    ranks = [data.draw(st.integers(1, d)) for d in shape]
    result = tucker(w, ranks, n_iter=1)
    assert all(b <= a for a, b in zip(result.errors, result.errors[1:]))
    explicit = rel_err(w, tucker_to_tensor(result.core, result.factors))
    assert abs(result.relative_error - explicit) < 1e-10
    assert 0.0 <= result.relative_error <= 1.0 + 1e-12
    for factor in result.factors:
        assert orthonormality_gap(factor) < 1e-10
    top = max_tt_ranks(shape)
    tt_ranks = [data.draw(st.integers(1, r)) for r in top]
    mps = tensor_train(w, tt_ranks)
    assert abs(mps.relative_error - rel_err(w, tt_to_tensor(mps.cores))) < 1e-10


# ------------------------------------------------------------------------------------------------
# Paper size (slow)
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_paper_size_matches_tensorly():
    shape = (4, 4, 3, 2, 128, 128, 3, 3)
    w = seeded(shape)
    ranks = (4, 4, 3, 2, 64, 64, 3, 3)
    assert abs(tucker(w, ranks).relative_error - tensorly_tucker_error(w, ranks)) <= 1e-5
    tt_ranks = (4, 16, 48, 96, 64, 9, 3)
    assert abs(tensor_train(w, tt_ranks).relative_error - tensorly_tt_error(w, tt_ranks)) <= 1e-5


def test_rank_above_the_other_modes_gives_orthonormal_factors_and_exact_errors():
    # Mode 0 asks for 3 vectors of an unfolding with 1 column after HOOI projects mode 1 on one
    # vector: two of them complete the basis, and must be orthogonal to the first.
    for seed in range(50):
        w = seeded((3, 2), torch.float64, seed)
        result = tucker(w, [3, 1], n_iter=1)
        assert orthonormality_gap(result.factors[0]) < 1e-12
        explicit = rel_err(w, tucker_to_tensor(result.core, result.factors))
        assert abs(result.relative_error - explicit) < 1e-12
