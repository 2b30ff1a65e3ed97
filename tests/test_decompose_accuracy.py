"""Accuracy of the HOSVD, TT-SVD and TR-SVD truncations on steep spectra, and of the errors they
report.

The tensors are small but have the hard spectra: one unfolding (a mode's for Tucker, a bond's for
the trains and the ring) has singular values ``logspace(0, -7)``, and only that unfolding is
truncated, so the optimum is known: ``sqrt(sum of the discarded sigma^2 / sum sigma^2)``. A Gram
matrix accumulated in float32 resolves singular values only down to about 3e-4 sigma_1; the ranks
cut the spectrum above that (where the float32 Gram suffices) and below it (where it must be
refined). Errors are checked against float64 computations on explicit reconstructions.
"""

from __future__ import annotations

import math

import pytest
import tensorly as tl
import torch
from tensorly.decomposition import tensor_ring as tl_tensor_ring

from tcompress.decompose import tensor_train, tt_to_tensor, tucker, tucker_to_tensor
from tcompress.decompose.mps import max_tt_ranks
from tcompress.decompose.spectra import bond_spectra, mode_spectra
from tcompress.decompose.tr import tensor_ring, tr_to_tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread (the reference SVDs and QRs would otherwise spend their time in
    parallel-region waits on a loaded machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def orthonormal(rows, cols, seed):
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q


def steep_matrix(rows, cols, seed=0, low=-7.0):
    """A rows x cols float64 matrix with singular values logspace(0, low)."""
    k = min(rows, cols)
    s = torch.logspace(0, low, k, dtype=torch.float64)
    return orthonormal(rows, k, seed) @ torch.diag(s) @ orthonormal(cols, k, seed + 1).T


def with_mode_spectrum(shape, mode, dtype=torch.float32, seed=0, low=-7.0):
    """A tensor whose mode-``mode`` unfolding has singular values logspace(0, low)."""
    rest = [d for k, d in enumerate(shape) if k != mode]
    m = steep_matrix(shape[mode], math.prod(rest), seed, low)
    return m.reshape(shape[mode], *rest).movedim(0, mode).contiguous().to(dtype)


def with_bond_spectrum(shape, bond, dtype=torch.float32, seed=0):
    """A tensor whose unfolding (modes 0..bond-1) x (the rest) has singular values
    logspace(0, -7)."""
    rows = math.prod(shape[:bond])
    return steep_matrix(rows, math.prod(shape[bond:]), seed).reshape(shape).to(dtype)


def optimum(matrix, rank):
    """The smallest relative error of a rank-``rank`` approximation (float64 SVD)."""
    s = torch.linalg.svdvals(matrix.double())
    return math.sqrt(float(s[rank:].square().sum() / s.square().sum()))


def rel_err(tensor, rebuilt):
    """``||W - W_hat|| / ||W||`` in float64."""
    w = tensor.double()
    return float(torch.linalg.vector_norm(w - rebuilt.double()) / torch.linalg.vector_norm(w))


def unfolding(tensor, mode):
    return tensor.movedim(mode, 0).reshape(tensor.shape[mode], -1)


def tucker64(result):
    """A Tucker decomposition rebuilt in float64 (no rounding of the reconstruction)."""
    return tucker_to_tensor(result.core.double(), [f.double() for f in result.factors])


def tt64(cores):
    return tt_to_tensor([core.double() for core in cores])


# ------------------------------------------------------------------------------------------------
# Tucker (HOSVD, HOOI)
# ------------------------------------------------------------------------------------------------

# (shape, mode): the truncated mode first (a single Gram), in the middle with a long trailing
# extent (batched GEMMs), with a short trailing extent (chunked transposing copies), last (tall
# slabs), and the 64 channels of a small hourglass's f_in mode (grid, f_in, f_out, h, w).
TUCKER_MODES = [
    ((48, 6, 5, 4), 0),
    ((2, 3, 40, 96), 2),
    ((3, 8, 48, 3, 3), 2),
    ((40, 6, 40), 2),
    ((2, 3, 64, 8, 3, 3), 2),
]


@pytest.mark.parametrize(("shape", "mode"), TUCKER_MODES)
def test_hosvd_is_optimal_on_a_steep_mode_spectrum(shape, mode):
    w = with_mode_spectrum(shape, mode)
    d = shape[mode]
    # First discarded sigma about 4e-2 (resolved by a float32 Gram), 6e-5 and 2e-6 (not).
    for fraction in (0.2, 0.6, 0.8):
        rank = round(fraction * (d - 1))
        ranks = list(shape)
        ranks[mode] = rank
        result = tucker(w, ranks)
        best = optimum(unfolding(w, mode), rank)
        achieved = rel_err(w, tucker64(result))
        assert achieved <= 1.01 * best, (rank, achieved, best)
        assert result.relative_error == pytest.approx(achieved, rel=1e-3)


def test_hooi_keeps_the_optimum_on_a_steep_spectrum():
    shape, mode = (2, 3, 40, 24), 2
    w = with_mode_spectrum(shape, mode)
    ranks = [2, 3, 28, 24]
    result = tucker(w, ranks, n_iter=2)
    best = optimum(unfolding(w, mode), 28)
    assert all(b <= a for a, b in zip(result.errors, result.errors[1:]))
    assert result.relative_error <= 1.01 * best
    assert rel_err(w, tucker64(result)) <= 1.01 * best


def test_float64_input_below_what_its_gram_resolves():
    # Singular values down to 1e-12: a float64 Gram resolves them only to about 1e-7 sigma_1.
    shape, mode = (2, 3, 40, 24), 2
    w = with_mode_spectrum(shape, mode, torch.float64, low=-12.0)
    for rank in (20, 30, 36):
        result = tucker(w, [2, 3, rank, 24])
        best = optimum(unfolding(w, mode), rank)
        assert rel_err(w, tucker64(result)) <= 1.01 * best, rank
        assert result.relative_error == pytest.approx(best, rel=1e-2), rank


def test_mode_spectra_are_accurate_where_float32_grams_are_not():
    shape, mode = (2, 3, 40, 24), 2
    w = with_mode_spectrum(shape, mode)
    tails = mode_spectra(w)[mode].flip(0).cumsum(0).flip(0)
    for rank in (12, 24, 32):
        bound = math.sqrt(float(tails[rank] / tails[0]))
        assert bound == pytest.approx(optimum(unfolding(w, mode), rank), rel=1e-2)


# ------------------------------------------------------------------------------------------------
# Tensor train (TT-SVD) and tensor ring (TR-SVD)
# ------------------------------------------------------------------------------------------------

# (shape, bond): a tall unfolding (384 x 144, more rows than columns, as bond 5 of an hourglass's
# W) and a wide one (48 x 288).
TT_BONDS = [((4, 3, 32, 16, 3, 3), 3), ((4, 3, 4, 32, 9), 3)]


@pytest.mark.parametrize(("shape", "bond"), TT_BONDS)
def test_tt_svd_is_optimal_on_a_steep_bond_spectrum(shape, bond):
    w = with_bond_spectrum(shape, bond)
    top = max_tt_ranks(shape)
    k = top[bond - 1]
    for fraction in (0.2, 0.6, 0.8):
        rank = round(fraction * (k - 1))
        ranks = list(top)
        ranks[bond - 1] = rank
        result = tensor_train(w, ranks)
        best = optimum(w.reshape(math.prod(shape[:bond]), -1), rank)
        achieved = rel_err(w, tt64(result.cores))
        assert achieved <= 1.01 * best, (rank, achieved, best)
        assert result.relative_error == pytest.approx(achieved, rel=1e-3)


def test_bond_spectra_are_accurate_where_float32_grams_are_not():
    shape, bond = TT_BONDS[0]
    w = with_bond_spectrum(shape, bond)
    tails = bond_spectra(w)[bond - 1].flip(0).cumsum(0).flip(0)
    matrix = w.reshape(math.prod(shape[:bond]), -1)
    for rank in (28, 86, 114):
        bound = math.sqrt(float(tails[rank] / tails[0]))
        assert bound == pytest.approx(optimum(matrix, rank), rel=1e-2)


@pytest.mark.parametrize("pair", [8, 24, 28])
def test_tr_svd_first_step_is_optimal_on_a_steep_spectrum(pair):
    # Ring bond 2 opened at mode 0 (40 x 48 unfolding): the first step keeps R_4 R_1 = pair
    # singular vectors; the sweep's bonds are at their caps, so it is exact and the error is the
    # first truncation's (optimum 4e-2, 5e-5, 9e-6; the float32 cores' own rounding, 3e-7 at
    # full rank, keeps deeper cuts from the optimum within 1%).
    shape = (40, 4, 4, 3)
    w = with_mode_spectrum(shape, 0)
    first = pair // 2
    ranks = (first, min(4 * first, 24), 6, 2)
    result = tensor_ring(w, ranks)
    assert result.opening == 0
    best = optimum(unfolding(w, 0), pair)
    achieved = rel_err(w, tr_to_tensor([core.double() for core in result.cores]))
    assert achieved <= 1.01 * best, (pair, achieved, best)
    assert result.relative_error == pytest.approx(achieved, rel=1e-3)


def test_tr_svd_matches_a_float64_svd_reference_on_a_steep_spectrum():
    # The sweep truncates too: the reference is tensorly's TR-SVD with float64 SVDs.
    shape = (40, 4, 4, 3)
    w = with_mode_spectrum(shape, 0)
    ranks = (12, 20, 6, 2)
    result = tensor_ring(w, ranks)
    with tl.backend_context("pytorch"):
        factors = tl_tensor_ring(w.double(), rank=[ranks[-1], *ranks], mode=result.opening)
        reference = rel_err(w, tl.tr_to_tensor(factors))
    assert rel_err(w, tr_to_tensor([core.double() for core in result.cores])) <= 1.01 * reference


# ------------------------------------------------------------------------------------------------
# Reported errors and full ranks
# ------------------------------------------------------------------------------------------------


def test_reported_errors_match_float64_reconstructions():
    """At small errors (where ||W||^2 - ||W_hat||^2 cancels) and at moderate ones."""
    shape, mode = (2, 3, 40, 24), 2
    w = with_mode_spectrum(shape, mode)
    for rank in (4, 24, 30, 34):  # errors about 5e-2, 3e-5, 3e-6, 5e-7
        result = tucker(w, [2, 3, rank, 24])
        assert result.relative_error == pytest.approx(rel_err(w, tucker64(result)), rel=1e-3)
    shape, bond = TT_BONDS[0]
    w = with_bond_spectrum(shape, bond)
    for rank in (20, 90, 110):
        ranks = list(max_tt_ranks(shape))
        ranks[bond - 1] = rank
        result = tensor_train(w, ranks)
        assert result.relative_error == pytest.approx(rel_err(w, tt64(result.cores)), rel=1e-3)


def test_full_ranks_stay_exact_on_steep_spectra():
    w = with_mode_spectrum((2, 3, 40, 24), 2)
    result = tucker(w, w.shape)
    assert rel_err(w, tucker_to_tensor(result.core, result.factors)) < 1e-6
    assert result.relative_error < 1e-6
    shape, bond = TT_BONDS[0]
    w = with_bond_spectrum(shape, bond)
    mps = tensor_train(w, max_tt_ranks(shape))
    assert rel_err(w, tt_to_tensor(mps.cores)) < 1e-6
    assert mps.relative_error < 1e-6
