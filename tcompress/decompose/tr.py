"""Tensor-ring decomposition by TR-SVD (Zhao et al., 2016, "Tensor ring decomposition").

A tensor ring writes an order-N tensor as the trace of a closed chain of order-3 cores::

    W[i_1, ..., i_N] ~ trace(G_1[:, i_1, :] @ G_2[:, i_2, :] @ ... @ G_N[:, i_N, :])

with ``G_k`` of shape ``(R_{k-1}, D_k, R_k)`` and ``R_0 = R_N``: the ring closes. Ranks are the
``N`` bond ranks ``(R_1, ..., R_N)``: ``R_k`` joins core ``k`` and core ``k + 1`` and ``R_N``,
the ring bond, joins the last core to the first. In messages, bonds are numbered 1 to N and modes
0 to N - 1 (bond ``k`` joins modes ``k - 1`` and ``k``; bond ``N`` joins mode ``N - 1`` and mode 0).
A ring with ``R_N = 1`` is exactly a tensor train (MPS, :mod:`tcompress.decompose.mps`), and more
generally a ring with any bond of 1 is a train cut open at that bond.

TR-SVD opens the ring at one mode ``k`` (:func:`tr_opening`): the modes are rotated so that ``k``
comes first; the leading ``R_{k-1} R_k`` left singular vectors of the ``D_k x (rest)`` unfolding,
reshaped to ``(D_k, R_{k-1}, R_k)``, become core ``k``; their projection ``U^T W_(k)`` is
reshaped to ``(R_{k-1}, R_k, rest)`` and its ``R_{k-1}`` axis moved to the end, where it rides
along with the last mode. A TT-SVD sweep of that remainder, of shape
``(R_k, D_{k+1}, ..., D_{k-1}, R_{k-1})`` (modes cyclic), gives the other cores; the last is
``(R_{k-2}, D_{k-1}, R_{k-1})``. The cores are rotated back so that ``cores[j]`` is mode ``j``'s.
Every core but the last of the sweep (mode ``k - 1``) is orthonormal: core ``k`` reshaped to
``(D_k, R_{k-1} R_k)`` and every following one reshaped to ``(R_{j-1} D_j, R_j)`` have orthonormal
columns, so the approximation is an orthogonal projection of ``W``.

Unlike TT-SVD, TR-SVD is neither optimal nor independent of the basis of the first step: the
``R_{k-1} R_k`` columns of ``U`` are split into the two bonds, so a rotation of them mixes the bonds
differently and changes what the sweep can keep. ``U`` is therefore always the leading singular
vectors in decreasing order with the largest entry of each positive (the convention of Zhao et
al. and of tensorly's ``tensor_ring``), except when ``R_{k-1} = 1``, where nothing mixes. A tensor
that is exactly a ring of ranks ``R`` is in general not recovered at ranks ``R``: the sweep's bond
``R_j`` needs room for the mixing, up to ``R_j min(R_{k-1}, R_k)^2``, to recover it exactly.

At full rank (:func:`tr_full_ranks`) the ring bond is 1: the ring is a train and TR-SVD is TT-SVD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import Tensor

from tcompress.decompose._grams import leading_left_singular_vectors
from tcompress.decompose._norms import (
    balancing_scale,
    check_decomposable,
    relative_error_from_energy,
    squared_distance,
    squared_norm,
)
from tcompress.decompose._products import _contract_middle
from tcompress.decompose.mps import _split, max_tt_ranks
from tcompress.errors import DecompositionError, RankError

__all__ = [
    "TRDecomposition",
    "cap_tr_ranks",
    "tensor_ring",
    "tr_full_ranks",
    "tr_opening",
    "tr_params",
    "tr_to_tensor",
]


@dataclass(frozen=True)
class TRDecomposition:
    """Result of :func:`tensor_ring`.

    Attributes
    ----------
    cores : tuple of Tensor
        The TR cores, ``cores[j]`` for mode ``j``, in the dtype and on the device of the input.
        Core ``opening`` reshaped to ``(D_k, R_{k-1} R_k)`` has orthonormal columns, and so have
        the cores after it around the ring, reshaped to ``(R_{j-1} D_j, R_j)``, except the last
        one of the sweep (mode ``opening - 1``), which carries the weights.
    ranks : tuple of int
        The bond ranks ``(R_1, ..., R_N)``, as given.
    opening : int
        The mode where TR-SVD opened the ring (:func:`tr_opening`).
    relative_error : float
        ``||W - W_hat|| / ||W||`` (float64 arithmetic).

    Shapes
    ------
    cores[j] : (R_{j-1}, D_j, R_j), 0-based j with R_{-1} = R_{N-1} (1-based: R_0 = R_N)
    ranks : (N,)
    """

    cores: tuple[Tensor, ...]
    ranks: tuple[int, ...]
    opening: int
    relative_error: float


# --------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if not dims or any(d < 1 for d in dims):
        raise RankError(f"shape {dims} has no modes or an empty mode; expected sizes >= 1")
    return dims


def _check_ranks(shape: tuple[int, ...], ranks: Sequence[int]) -> tuple[int, ...]:
    """``N`` integers >= 1 (Python or numpy integers, not bools), else a one-line RankError."""
    if isinstance(ranks, str | bytes) or not isinstance(ranks, Sequence):
        raise RankError(
            f"TR ranks {ranks!r} are not a sequence of integers; expected {len(shape)} bond ranks "
            f"(R_1 .. R_{len(shape)}) for shape {shape}"
        )
    if len(ranks) != len(shape):
        raise RankError(
            f"got {len(ranks)} TR bond rank(s) {tuple(ranks)} for a tensor of order {len(shape)}; "
            f"expected {len(shape)} (R_1 .. R_{len(shape)}, the last one closing the ring)"
        )
    out = []
    for j, r in enumerate(ranks):
        if isinstance(r, bool) or not isinstance(r, Integral) or int(r) < 1:
            raise RankError(f"TR bond rank {j + 1} is {r!r}; expected an integer >= 1")
        out.append(int(r))
    return tuple(out)


def _fits(shape: tuple[int, ...], ranks: tuple[int, ...], k: int) -> bool:
    """Whether mode ``k``'s first unfolding can hold its two bonds ``R_{k-1} R_k``."""
    return ranks[k - 1] * ranks[k] <= min(shape[k], math.prod(shape) // shape[k])


def _opening(shape: tuple[int, ...], ranks: tuple[int, ...]) -> int:
    n = len(shape)
    fitting = [k for k in range(n) if _fits(shape, ranks, k)]
    if not fitting:
        big = max(range(n), key=lambda k: shape[k])
        hold = min(shape[big], math.prod(shape) // shape[big])
        raise RankError(
            f"TR bond ranks {ranks} cannot open the ring at any mode of shape {shape}: a mode k "
            f"must hold R_(k-1) x R_k <= min(D_k, product of the other sizes), but even the "
            f"largest, mode {big} (size {shape[big]}), holds at most {hold} and its bonds "
            f"{(big - 1) % n + 1} and {big + 1} give {ranks[big - 1]} x {ranks[big]} = "
            f"{ranks[big - 1] * ranks[big]}"
        )
    for k in fitting:
        if ranks[k - 1] == 1:
            # A bond of 1 cuts the ring into a train: open it there (TT-SVD of the rotated tensor).
            return k
    return max(fitting, key=lambda k: (shape[k], -k))


def tr_opening(shape: Sequence[int], ranks: Sequence[int]) -> int:
    """The mode (0-based) where TR-SVD opens the ring.

    A mode ``k`` can open the ring when its first unfolding can hold its two bonds:
    ``R_{k-1} R_k <= min(D_k, prod_{j != k} D_j)`` (bonds cyclic, ``R_0 = R_N``). If a bond is 1,
    the ring is a train cut open there: the first mode whose left bond ``R_{k-1}`` is 1 and that
    can open the ring is taken, so that with ``R_N = 1`` TR-SVD is TT-SVD (the ring opens at
    mode 0). Otherwise, among the modes that can open the ring, the largest ``D_k``; ties go to
    the first.

    Parameters
    ----------
    shape : sequence of int
        ``(D_1, ..., D_N)``.
    ranks : sequence of int
        The bond ranks ``(R_1, ..., R_N)``.

    Returns
    -------
    int
        The opening mode ``k``, ``0 <= k < N``.

    Shapes
    ------
    shape : (N,)
    ranks : (N,)

    Raises
    ------
    RankError
        If the ranks are not ``N`` integers >= 1, or no mode can hold its pair of bonds.
    """
    dims = _check_shape(shape)
    return _opening(dims, _check_ranks(dims, ranks))


def _mode_span(modes: Sequence[int]) -> str:
    """``mode 6``, ``modes 6..7`` or, around the ring, ``modes 6..7, 0``."""
    runs: list[list[int]] = []
    for m in modes:
        if runs and runs[-1][-1] == m - 1:
            runs[-1].append(m)
        else:
            runs.append([m])
    text = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)
    return f"mode {text}" if len(modes) == 1 else f"modes {text}"


def _caps(shape: tuple[int, ...], ranks: tuple[int, ...], k: int):
    """Cap the sweep's bonds for opening ``k``: ``(bonds, {bond index: (old, cap, reason)})``."""
    n = len(shape)
    bonds = list(ranks)
    ring = ranks[k - 1]
    capped: dict[int, tuple[int, int, str]] = {}
    for step in range(1, n - 1):
        m = (k + step) % n  # the mode before bond m (0-based index m), swept after mode m - 1
        prev = bonds[m - 1]
        rest = [(k + s) % n for s in range(step + 1, n)]  # modes after m, up to k - 1
        rows, cols = prev * shape[m], math.prod(shape[j] for j in rest) * ring
        cap = min(rows, cols)
        if bonds[m] > cap:
            if cap == rows:
                why = f"bond {(m - 1) % n + 1} x {shape[m]}"
            else:
                why = f"bond {(k - 1) % n + 1} x {_mode_span(rest)} = {ring} x {cols // ring}"
            capped[m] = (bonds[m], cap, why)
            bonds[m] = cap
    return tuple(bonds), capped


def cap_tr_ranks(
    shape: Sequence[int], ranks: Sequence[int]
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The bond ranks TR-SVD can realise from the given ones, with a note per capped bond.

    With the ring opened at mode ``k`` (:func:`tr_opening`), the two bonds of mode ``k``
    (``R_{k-1}`` and ``R_k``, which fit by the choice of ``k``) are kept. The sweep then visits
    modes ``m = k+1, ..., k-2`` (cyclic); bond ``R_m`` (between modes ``m`` and ``m + 1``) is
    capped at the rank of the unfolding it truncates::

        R_m <= min(R_{m-1} D_m,  D_{m+1} ... D_{k-1} R_{k-1})

    (``R_{m-1}`` already capped), i.e. the rows (previous bond times the mode's size) and columns
    (the remaining modes' sizes times the ring bond ``R_{k-1}`` riding along) of the remainder.
    A bond of 1 lowers the caps of the modes next to it, which can change the opening; the
    capping is then repeated from the new opening until the ranks no longer change (each round
    only lowers bonds), so the result is always accepted by :func:`tensor_ring`. With ``R_N = 1``
    and mode 0 able to open the ring, the ring opens at mode 0 and the caps are the TT-SVD caps:
    every bond at its cap reconstructs any tensor exactly.

    Parameters
    ----------
    shape : sequence of int
        ``(D_1, ..., D_N)``.
    ranks : sequence of int
        The requested bond ranks ``(R_1, ..., R_N)``.

    Returns
    -------
    ranks : tuple of int
        The capped bond ranks.
    notes : tuple of str
        One line per capped bond, e.g. ``"bond 3: 40 capped at 16 (bond 2 x 4)"`` or
        ``"bond 6: 50 capped at 18 (bond 8 x modes 6..7 = 2 x 9)"`` (the modes listed
        around the ring, e.g. ``modes 4, 0``).

    Shapes
    ------
    shape : (N,)
    ranks, return ranks : (N,)

    Raises
    ------
    RankError
        If the ranks are not ``N`` integers >= 1, or no mode can hold its pair of bonds.
    """
    dims = _check_shape(shape)
    original = bonds = _check_ranks(dims, ranks)
    reasons: dict[int, tuple[int, str]] = {}
    while True:
        new, capped = _caps(dims, bonds, _opening(dims, bonds))
        for m, (_, cap, why) in capped.items():
            reasons[m] = (cap, why)
        if new == bonds:
            break
        bonds = new
    notes = tuple(
        f"bond {m + 1}: {original[m]} capped at {bonds[m]} ({reasons[m][1]})"
        for m in sorted(reasons)
    )
    return bonds, notes


def tr_full_ranks(shape: Sequence[int]) -> tuple[int, ...]:
    """Bond ranks that represent every tensor of ``shape`` exactly.

    The ring bond is 1 and the others are the maximal TT ranks (:func:`max_tt_ranks`): at full
    rank the ring is a train, TR-SVD opens it at mode 0 and is TT-SVD.

    Parameters
    ----------
    shape : sequence of int
        ``(D_1, ..., D_N)``.

    Returns
    -------
    tuple of int
        ``(R_1, ..., R_{N-1}, 1)`` with ``R_k = min(D_1 ... D_k, D_{k+1} ... D_N)``.

    Shapes
    ------
    shape : (N,)
    return : (N,)
    """
    return (*max_tt_ranks(_check_shape(shape)), 1)


def tr_params(shape: Sequence[int], ranks: Sequence[int]) -> int:
    """Number of entries of the TR cores: ``sum_k R_{k-1} D_k R_k`` with ``R_0 = R_N``.

    Parameters
    ----------
    shape : sequence of int
        ``(D_1, ..., D_N)``.
    ranks : sequence of int
        The bond ranks ``(R_1, ..., R_N)``.

    Returns
    -------
    int
        The parameter count.

    Shapes
    ------
    shape : (N,)
    ranks : (N,)
    """
    dims = _check_shape(shape)
    bonds = _check_ranks(dims, ranks)
    return sum(bonds[k - 1] * d * bonds[k] for k, d in enumerate(dims))


# --------------------------------------------------------------------------------------------
# Reconstruction
# --------------------------------------------------------------------------------------------


def tr_to_tensor(cores: Sequence[Tensor]) -> Tensor:
    """Contract a tensor ring into the full tensor. Differentiable with respect to every core.

    The chain starts at the core after the smallest bond ``a`` (the ring bond when it is the
    smallest), whose index stays open: the cores are chained by matrix products on a
    ``(a * D_s ... D_j, R_j)`` interface, and the last core is contracted over its two bonds at
    once (its right bond closing the ring), so the largest intermediate has
    ``a * D_s ... D_{s-2} * R`` entries and no ``(a, ..., a)`` block is ever formed. The result
    is rotated back to mode order when the chain did not start at mode 0.

    Parameters
    ----------
    cores : sequence of Tensor
        TR cores with matching bond dimensions around the ring (core ``N - 1``'s right bond is
        core 0's left bond).

    Returns
    -------
    Tensor
        The full tensor, contiguous, in the dtype and on the device of the cores.

    Shapes
    ------
    cores[j] : (R_{j-1}, D_j, R_j), R_{-1} = R_{N-1}
    return : (D_1, ..., D_N)
    """
    n = len(cores)
    if not n:
        raise RankError("cannot rebuild a tensor ring without cores")
    for j in range(n):
        if cores[j].ndim != 3:
            raise RankError(
                f"TR core {j} has shape {tuple(cores[j].shape)}; expected (R_in, D, R_out)"
            )
        if cores[j].shape[0] != cores[j - 1].shape[2]:
            raise RankError(
                f"TR core {j} has left rank {cores[j].shape[0]} but core {(j - 1) % n} has right "
                f"rank {cores[j - 1].shape[2]}"
            )
    shape = [c.shape[1] for c in cores]
    if n == 1:
        # W[i] = trace(G[:, i, :]).
        return torch.diagonal(cores[0], dim1=0, dim2=2).sum(-1).contiguous()
    start = min(range(n), key=lambda j: cores[j].shape[0])
    chain = [cores[(start + s) % n] for s in range(n)]
    a = chain[0].shape[0]
    # Rows index (alpha, i_s, ..., i_j) row-major, alpha the open ring bond; columns the bond R_j.
    left = chain[0].reshape(a * shape[start], chain[0].shape[2])
    for core in chain[1:-1]:
        r_in, d, r_out = core.shape
        left = (left @ core.reshape(r_in, d * r_out)).reshape(-1, r_out)
    last = chain[-1]
    r_in = last.shape[0]
    # Close the ring: sum over (alpha, R) of left[alpha, p, R] * last[R, i, alpha].
    full = torch.tensordot(left.reshape(a, -1, r_in), last, dims=([0, 2], [2, 0]))
    rotated = [shape[(start + s) % n] for s in range(n)]
    full = full.reshape(rotated)
    if start:
        full = full.movedim(tuple(range(n - start, n)), tuple(range(start)))
    return full.contiguous()


# --------------------------------------------------------------------------------------------
# TR-SVD
# --------------------------------------------------------------------------------------------


def _check_input(tensor: Tensor, ranks: Sequence[int]) -> tuple[tuple[int, ...], int]:
    """Validated bonds and the opening; RankError for a bond above its cap."""
    check_decomposable(tensor)
    shape = tuple(tensor.shape)
    bonds = _check_ranks(shape, ranks)
    k = _opening(shape, bonds)
    _, capped = _caps(shape, bonds, k)
    if capped:
        m, (r, cap, why) = min(capped.items())
        raise RankError(
            f"TR bond rank {m + 1} (between modes {m} and {(m + 1) % len(shape)}) is {r}, above "
            f"its cap {cap} ({why}) for shape {shape} with the ring opened at mode {k}; cap the "
            f"ranks with cap_tr_ranks"
        )
    return bonds, k


def _balanced_finite(tensor: Tensor) -> tuple[Tensor, float, float]:
    """:func:`balanced` after a finiteness check: (W 2^k, its squared norm, 2^k).

    The squared norm is finite when every entry is; when it is not, the entries are checked
    exactly, and finite ones whose squares overflow are first scaled by a power of two that brings
    the largest magnitude to about 1.
    """
    w = tensor.detach().contiguous()
    norm_sq = squared_norm(w)
    if math.isfinite(norm_sq):
        scale = balancing_scale(norm_sq, w.numel(), w.dtype)
        if scale != 1.0:
            # Exact: a power of two (as in balanced).
            w, norm_sq = w * scale, norm_sq * scale * scale
        return w, norm_sq, scale
    if not bool(torch.isfinite(w).all()):
        raise DecompositionError(
            f"tensor of shape {tuple(w.shape)} has NaN or infinite entries; expected finite values"
        )
    scale = 2.0 ** -math.frexp(float(w.abs().max()))[1]
    w = w * scale
    return w, squared_norm(w), scale


def _open(w: Tensor, k: int, ring: int, first: int) -> tuple[Tensor, Tensor]:
    """First TR-SVD step at mode ``k``: ``(U, U^T W_(k))`` with the columns ordered as the
    rotated tensor ``(D_{k+1}, ..., D_{N-1}, D_0, ..., D_{k-1})``.

    With ``R_{k-1} > 1`` the result depends on the basis ``U`` of the kept subspace, not only on
    the subspace: its columns are split into the two bonds, so a rotation of them mixes the
    bonds differently and changes what the later truncations can keep. ``U`` is then always the
    leading left singular vectors in decreasing order, each with its largest entry positive (as
    in Zhao et al. and tensorly), even where nothing is truncated. With ``R_{k-1} = 1`` nothing
    mixes and any orthonormal basis gives the same approximation: the cheaper TT-SVD step.

    Shapes
    ------
    w : (D_0, ..., D_{N-1}), contiguous
    return : (D_k, R_{k-1} R_k), (R_{k-1} R_k, prod_{j != k} D_j)
    """
    shape = tuple(w.shape)
    d, pair = shape[k], ring * first
    before, after = math.prod(shape[:k]), math.prod(shape[k + 1 :])
    if k == 0 and ring == 1:
        # The unfolding is a view: exactly the first TT-SVD step.
        return _split(w.reshape(d, after), pair)
    view = w.reshape(before, d, after)
    if ring == 1 and pair == d:
        # No truncation and D_k <= columns: U = I and the projection keeps the tensor.
        basis = torch.eye(d, dtype=w.dtype, device=w.device)
        projected = view
    else:
        # Singular vectors from the mode Gram on the strided view; the projection is one GEMM or
        # batched GEMM to (before, pair, after): the input is not copied into the rotated layout.
        basis = leading_left_singular_vectors(w, k, pair, ordered=ring > 1)
        projected = _contract_middle(view, basis, move=False)
    # (before, pair, after) -> (pair, after, before): the rotated column order.
    return basis, projected.permute(1, 2, 0).reshape(pair, after * before)


def tensor_ring(tensor: Tensor, ranks: Sequence[int]) -> TRDecomposition:
    """Tensor-ring decomposition by TR-SVD.

    Parameters
    ----------
    tensor : Tensor
        The tensor ``W``, float32 or float64, finite, any device, order ``N >= 1``.
    ranks : sequence of int
        The ``N`` bond ranks ``(R_1, ..., R_N)``, ``R_N`` closing the ring, within the caps of
        :func:`cap_tr_ranks` (which callers are expected to have applied). Every core gets
        exactly these bonds.

    Returns
    -------
    TRDecomposition
        The cores (``cores[j]`` for mode ``j``), the ranks, the opening mode and the relative
        error.

    Shapes
    ------
    tensor : (D_1, ..., D_N)
    cores[j] : (R_{j-1}, D_j, R_j), R_{-1} = R_{N-1}

    Raises
    ------
    RankError
        If the ranks are not ``N`` integers >= 1, no mode can open the ring (:func:`tr_opening`)
        or a bond is above its cap (:func:`cap_tr_ranks`).
    DecompositionError
        If ``tensor`` is not a float32 or float64 tensor, or has NaN or infinite entries.

    Notes
    -----
    The sweep's steps are those of :func:`tcompress.decompose.mps.tensor_train` (identity or QR
    where nothing is truncated, Gram eigenvectors where something is, refined in float64 where
    the Gram's rounding hides the truncation). The first step takes the leading singular vectors
    of the mode unfolding (Gram of the smaller side, likewise checked and refined) on a strided
    view of ``W``, so the input is not copied into the rotated layout; with ``R_{k-1} > 1`` they
    are used even where nothing is truncated, as the result depends on the basis (module
    docstring), and then every kept singular value must be resolved too. With the ring opened at
    mode 0 and ``R_N = 1`` the cores are exactly those of ``tensor_train``. The approximation is
    an orthogonal projection of ``W`` whose norm is that of the sweep's last core, so the
    relative error is ``sqrt(||W||^2 - ||G_{k-1}||^2) / ||W||`` in float64, measured on a float64
    reconstruction when the error is too small for that difference to be accurate.
    """
    bonds, k = _check_input(tensor, ranks)
    shape = tuple(tensor.shape)
    n = len(shape)
    with torch.no_grad():
        w, norm_sq, scale = _balanced_finite(tensor)
        if n == 1:
            # The ranks are (1,): the single core is the tensor.
            return TRDecomposition((w.reshape(1, shape[0], 1) / scale,), bonds, 0, 0.0)
        ring, first = bonds[k - 1], bonds[k]
        basis, remainder = _open(w, k, ring, first)
        # U reshaped (D_k, R_{k-1}, R_k) -> core (R_{k-1}, D_k, R_k).
        sweep = [basis.reshape(shape[k], ring, first).transpose(0, 1).contiguous()]
        # (R_{k-1}, R_k, rest) -> (R_k, rest, R_{k-1}): the ring bond rides with the last mode.
        remainder = remainder.reshape(ring, -1).T.reshape(first, -1, ring)
        r_prev = first
        for step in range(1, n - 1):
            m = (k + step) % n
            basis, remainder = _split(remainder.reshape(r_prev * shape[m], -1), bonds[m])
            sweep.append(basis.reshape(r_prev, shape[m], bonds[m]))
            r_prev = bonds[m]
        last = remainder.reshape(r_prev, shape[k - 1], ring).contiguous()
        if last.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
            # No step changed the remainder (every bond was an identity): do not alias the input.
            last = last.clone()
        sweep.append(last)
        cores = [sweep[(j - k) % n] for j in range(n)]
        error = relative_error_from_energy(norm_sq, squared_norm(last), w.dtype)
        if error is None:
            # Small error: measured on the cores' reconstruction in float64.
            rebuilt = tr_to_tensor([core.to(torch.float64) for core in cores])
            error = (squared_distance(w, rebuilt) / norm_sq) ** 0.5
        if scale != 1.0:
            cores[k - 1] = last / scale
    return TRDecomposition(tuple(cores), bonds, k, error)
