"""Gram matrices of mode unfoldings and their leading eigenvectors / singular vectors.

Everything here works on plain :class:`torch.Tensor` objects of any order, dtype float32 or float64
and any device. Gram matrices of mode unfoldings are accumulated with BLAS calls on strided views
(or on cache-sized transposed blocks when the mode is followed by only a few entries), so the large
input tensor is never copied into a permuted layout. The leading left singular vectors of an
unfolding are the leading eigenvectors of the Gram matrix of its smaller side.

Notation: a tensor ``T`` of order ``N`` viewed around a mode (or a run of adjacent modes) is the
three-way array ``X`` of shape ``(a, d, b)`` where ``a`` is the product of the sizes before the
mode, ``d`` the size of the mode and ``b`` the product of the sizes after it. The mode unfolding
is then the ``d x (a*b)`` matrix whose columns are the fibres ``X[alpha, :, beta]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tcompress.decompose._norms import _prod

try:  # SciPy's LAPACK can return only the leading eigenpairs (syevr), torch cannot.
    import scipy.linalg as _scipy_linalg
except ImportError:  # pragma: no cover - scipy is a declared dependency
    _scipy_linalg = None

__all__ = [
    "block_mode_grams",
    "gram_columns",
    "leading_eigh",
    "leading_left_singular_vectors",
    "slice_gram",
]

# Adjacent modes whose sizes multiply to at most this share one Gram matrix (their individual Grams
# are partial traces of it); one pass over the tensor then serves several small modes.
_GRAM_GROUP_MAX = 16
# Adjacent modes whose sizes multiply to at most this are contracted through one Kronecker factor
# (in _products); _cross_of_tall also splits only products of at most this width into slabs.
_KRON_GROUP_MAX = 128
# A trailing extent below this makes batched BLAS on strided views inefficient (also used by
# the contraction planner in _products).
_MIN_INNER = 64
# Elements per block of a transposing copy: about 2 MB in float32, so the block stays in cache.
_CHUNK_ELEMS = 1 << 19
# Elements of the (a, d, d) stack of per-slice Grams materialised at once.
_STACK_ELEMS = 1 << 22
# From this size on, the symmetric eigensolver computes only the requested leading eigenpairs.
_EIGH_SUBSET_MIN = 256
# Column blocks of at least this width when a large Gram is built from its upper triangle only.
_SYM_BLOCK_MIN = 256


# --------------------------------------------------------------------------------------------
# Gram matrices
# --------------------------------------------------------------------------------------------


def gram_columns(matrix: Tensor) -> Tensor:
    """``matrix.T @ matrix`` for a (possibly strided) 2-D view, exploiting symmetry when large.

    Parameters
    ----------
    matrix : Tensor
        Rows and columns may have any strides BLAS accepts (one of them unit).

    Returns
    -------
    Tensor
        The symmetric Gram matrix of the columns, in the dtype of ``matrix``.

    Shapes
    ------
    matrix : (m, n)
    return : (n, n)
    """
    m, n = matrix.shape
    if n < 2 * _SYM_BLOCK_MIN:
        return matrix.T @ matrix
    # Only the block upper triangle is computed: with 4 column blocks that is 10 of 16 blocks.
    n_blocks = min(4, n // _SYM_BLOCK_MIN)
    edges = [round(i * n / n_blocks) for i in range(n_blocks + 1)]
    gram = torch.empty(n, n, dtype=matrix.dtype, device=matrix.device)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        # Block row [lo, hi) against all columns to its right (diagonal block included).
        gram[lo:hi, lo:] = matrix[:, lo:hi].T @ matrix[:, lo:]
        # The mirror image fills the block column below the diagonal.
        gram[hi:, lo:hi] = gram[lo:hi, hi:].T
    return gram


def _cross_of_tall(x: Tensor, y: Tensor) -> Tensor:
    """``x.T @ y`` for tall matrices with few columns.

    A single GEMM with a tiny output is poorly parallelised by BLAS; splitting the rows into a
    batch of equal slabs and summing the per-slab products keeps every core busy.

    Shapes
    ------
    x : (m, d), m >> d
    y : (m, e)
    return : (d, e)
    """
    m, d = x.shape
    e = y.shape[1]
    n_slabs = min(64, m // 2048)
    if n_slabs < 2 or max(d, e) > _KRON_GROUP_MAX:
        return gram_columns(x) if y is x else x.T @ y
    per = m // n_slabs
    head_x = x[: n_slabs * per].reshape(n_slabs, per, d)
    head_y = head_x if y is x else y[: n_slabs * per].reshape(n_slabs, per, e)
    out = torch.bmm(head_x.transpose(1, 2), head_y).sum(0)
    if n_slabs * per < m:
        out += x[n_slabs * per :].T @ y[n_slabs * per :]
    return out


def slice_gram(x: Tensor, y: Tensor | None = None) -> Tensor:
    """``sum_alpha X[alpha] @ Y[alpha].T``: contraction of two 3-way views over their outer axes.

    With ``y = x`` (the default) this is the Gram matrix of the mode-``d`` unfolding of the tensor
    viewed as ``x``. With another ``y`` it is the cross product of two unfoldings (the gradient
    of a mode contraction with respect to its matrix).

    Parameters
    ----------
    x : Tensor
        A three-way view ``(a, d, b)``; the ``(d, b)`` slices must be BLAS-compatible.
    y : Tensor, optional
        A three-way view ``(a, e, b)`` like ``x``.

    Returns
    -------
    Tensor
        The ``d x e`` product, in the dtype of ``x``.

    Shapes
    ------
    x : (a, d, b)
    y : (a, e, b)
    return : (d, e)
    """
    same = y is None
    y = x if y is None else y
    a, d, b = x.shape
    e = y.shape[1]
    if a == 1:
        # The unfoldings are the (d, b) and (e, b) matrices X[0] and Y[0].
        return gram_columns(x[0].T) if same else x[0] @ y[0].T
    if b == 1:
        # The unfoldings are the transposes of the (a, d) and (a, e) matrices X[..., 0], Y[..., 0].
        xs = x[:, :, 0]
        return _cross_of_tall(xs, xs if same else y[:, :, 0])
    out = torch.zeros(d, e, dtype=x.dtype, device=x.device)
    if b >= _MIN_INNER:
        # Every slice is a matrix with a long unit-stride side: one batched GEMM per block of
        # slices, materialising at most _STACK_ELEMS entries of per-slice products at a time.
        step = max(1, _STACK_ELEMS // (d * e))
        for lo in range(0, a, step):
            block_x = x[lo : lo + step]
            block_y = block_x if same else y[lo : lo + step]
            out += torch.bmm(block_x, block_y.transpose(1, 2)).sum(0)
        return out
    # Short trailing extent: copy blocks of slices into cache-sized buffers laid out (rows, b, d),
    # i.e. X[alpha].T for each alpha, where the block is a contiguous (rows * b, d) matrix; the
    # block's contribution is then one GEMM of two such matrices.
    rows = max(1, _CHUNK_ELEMS // (max(d, e) * b))
    buffer_x = torch.empty(rows, b, d, dtype=x.dtype, device=x.device)
    buffer_y = buffer_x if same else torch.empty(rows, b, e, dtype=y.dtype, device=y.device)
    for lo in range(0, a, rows):
        block_x = x[lo : lo + rows]
        target_x = buffer_x[: block_x.shape[0]]
        target_x.copy_(block_x.transpose(1, 2))
        flat_x = target_x.view(-1, d)
        if same:
            flat_y = flat_x
        else:
            target_y = buffer_y[: block_x.shape[0]]
            target_y.copy_(y[lo : lo + rows].transpose(1, 2))
            flat_y = target_y.view(-1, e)
        out.addmm_(flat_x.T, flat_y)
    return out


def _partial_trace(block_gram: Tensor, sizes: Sequence[int], j: int) -> Tensor:
    """Gram of one mode from the Gram of a run of adjacent modes.

    ``G_run[(i_1..i_m), (i'_1..i'_m)] = sum_c W[.., i_1..i_m, ..] W[.., i'_1..i'_m, ..]``;
    summing its entries with ``i_l = i'_l`` for every ``l != j`` leaves the Gram of mode ``j``.

    Shapes
    ------
    block_gram : (prod(sizes), prod(sizes))
    return : (sizes[j], sizes[j])
    """
    before = _prod(sizes[:j])
    after = _prod(sizes[j + 1 :])
    g6 = block_gram.reshape(before, sizes[j], after, before, sizes[j], after)
    return torch.einsum("pjqpkq->jk", g6)


def block_mode_grams(tensor: Tensor, modes: Sequence[int]) -> dict[int, Tensor]:
    """Gram matrices ``W_(k) W_(k)^T`` of several mode unfoldings, without copying the tensor.

    Adjacent requested modes whose sizes multiply to at most ``_GRAM_GROUP_MAX`` are served by one
    Gram of their combined mode (one pass over the tensor), split by partial traces.

    Parameters
    ----------
    tensor : Tensor
        Contiguous tensor of order N, float32 or float64.
    modes : sequence of int
        The modes whose Grams are wanted.

    Returns
    -------
    dict of int to Tensor
        ``grams[k]`` is the ``D_k x D_k`` Gram matrix in the dtype of ``tensor``.

    Shapes
    ------
    tensor : (D_1, ..., D_N)
    grams[k] : (D_k, D_k)
    """
    shape = tuple(tensor.shape)
    wanted = sorted(set(modes))
    runs: list[list[int]] = []
    for k in wanted:
        last = runs[-1] if runs else None
        if (
            last is not None
            and last[-1] == k - 1
            and _prod(shape[m] for m in last) * shape[k] <= _GRAM_GROUP_MAX
        ):
            last.append(k)
        else:
            runs.append([k])
    grams: dict[int, Tensor] = {}
    for run in runs:
        sizes = [shape[m] for m in run]
        d = _prod(sizes)
        view = tensor.reshape(_prod(shape[: run[0]]), d, _prod(shape[run[-1] + 1 :]))
        block = slice_gram(view)
        if len(run) == 1:
            grams[run[0]] = block
        else:
            for j, m in enumerate(run):
                grams[m] = _partial_trace(block, sizes, j)
    return grams


# --------------------------------------------------------------------------------------------
# Eigenvectors and singular vectors
# --------------------------------------------------------------------------------------------


def _fix_signs(vectors: Tensor) -> Tensor:
    """Make the largest-magnitude entry of every column positive (removes the sign ambiguity)."""
    idx = vectors.abs().argmax(dim=0, keepdim=True)
    signs = torch.sign(vectors.gather(0, idx))
    signs[signs == 0] = 1
    return vectors * signs


def leading_eigh(gram: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Leading eigenpairs of a symmetric positive semi-definite matrix, in float64.

    Parameters
    ----------
    gram : Tensor
        Symmetric matrix (any float dtype, any device); it is promoted to float64.
    rank : int
        Number of leading eigenpairs wanted, ``1 <= rank <= n``.

    Returns
    -------
    values : Tensor
        Eigenvalues in descending order (float64).
    vectors : Tensor
        Orthonormal eigenvectors (float64), columns ordered like ``values``, each with its
        largest-magnitude entry positive.

    Shapes
    ------
    gram : (n, n)
    values : (rank,)
    vectors : (n, rank)

    Notes
    -----
    On the CPU, for ``n >= 256`` and ``rank <= n / 2``, LAPACK ``dsyevr`` (through SciPy) computes
    only the wanted eigenpairs after the tridiagonal reduction, which saves the back-transformation
    of the others; elsewhere ``torch.linalg.eigh`` computes all of them.
    """
    n = gram.shape[0]
    g64 = gram.detach().to(torch.float64)
    # Symmetrise: rounding in a GEMM-built Gram can leave it asymmetric in the last ulp.
    g64 = (g64 + g64.T) * 0.5
    if (
        _scipy_linalg is not None
        and g64.device.type == "cpu"
        and n >= _EIGH_SUBSET_MIN
        and 2 * rank <= n
    ):
        values_np, vectors_np = _scipy_linalg.eigh(
            g64.numpy(),
            subset_by_index=[n - rank, n - 1],
            driver="evr",
            overwrite_a=True,
            check_finite=False,
        )
        values = torch.from_numpy(values_np.copy())
        vectors = torch.from_numpy(vectors_np.copy())
    else:
        values, vectors = torch.linalg.eigh(g64)
        values, vectors = values[n - rank :], vectors[:, n - rank :]
    # LAPACK returns ascending order; the decompositions want the leading pair first.
    values = values.flip(0)
    vectors = _fix_signs(vectors.flip(1))
    return values, vectors


def _orthonormal_completion(basis: Tensor, total: int) -> Tensor:
    """Extend orthonormal columns to ``total`` orthonormal columns (deterministic).

    Shapes
    ------
    basis : (n, r)
    return : (n, total), r <= total <= n
    """
    r = basis.shape[1]
    # The complete Householder QR of the basis: its trailing columns are an orthonormal basis of
    # the orthogonal complement, orthogonal to working precision whatever the basis (a random
    # block projected against it can come out nearly rank-deficient and lose orthogonality).
    q, _ = torch.linalg.qr(basis.to(torch.float64), mode="complete")
    return torch.cat([basis, q[:, r:total].to(basis.dtype)], dim=1)


def leading_left_singular_vectors(
    tensor: Tensor, mode: int, rank: int, gram: Tensor | None = None
) -> Tensor:
    """The ``rank`` leading left singular vectors of the mode-``mode`` unfolding.

    Parameters
    ----------
    tensor : Tensor
        Contiguous tensor of order N, float32 or float64.
    mode : int
        The mode ``k`` whose unfolding ``W_(k)`` (``D_k`` rows) is decomposed.
    rank : int
        Number of singular vectors, ``1 <= rank <= D_k``.
    gram : Tensor, optional
        ``W_(k) W_(k)^T`` if the caller already has it (then always used).

    Returns
    -------
    Tensor
        Orthonormal columns in the dtype of ``tensor``, ordered by decreasing singular value.

    Shapes
    ------
    tensor : (D_1, ..., D_N)
    return : (D_k, rank)

    Notes
    -----
    The singular vectors come from the eigenvectors of the Gram matrix of the smaller side of the
    unfolding: ``W_(k) W_(k)^T = U S^2 U^T`` when ``D_k`` is at most the number of columns ``c``;
    otherwise ``W_(k)^T W_(k) = V S^2 V^T`` (``c x c``) and ``U`` spans ``W_(k) V``. In the latter
    case ``U`` is the Q factor of ``W_(k) V``: ``W_(k) V = U S`` so Q equals ``U`` up to column
    signs, and Householder QR stays orthonormal when some singular values are zero. Columns beyond
    ``c`` (a rank above the unfolding's column count) complete the basis orthonormally.
    """
    shape = tuple(tensor.shape)
    d = shape[mode]
    c = tensor.numel() // d
    if gram is None and d <= c:
        gram = block_mode_grams(tensor, [mode])[mode]
    if gram is not None:
        _, vectors = leading_eigh(gram, rank)
        return vectors.to(tensor.dtype)
    # Tall unfolding (more rows than columns): decompose the c x c column Gram instead.
    unfolding = tensor.movedim(mode, 0).reshape(d, c)
    kept = min(rank, c)
    _, v = leading_eigh(gram_columns(unfolding), kept)
    q, _ = torch.linalg.qr(unfolding @ v.to(tensor.dtype))
    q = _fix_signs(q)
    if rank > c:
        # The unfolding has rank <= c: any orthonormal completion spans its range.
        q = _orthonormal_completion(q, rank)
    return q.contiguous()
