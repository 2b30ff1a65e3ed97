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

Accuracy: a Gram matrix accumulated in float32 carries rounding of about eps32 * sigma_1^2 in
every eigenvalue, which hides singular values below about sqrt(eps32) * sigma_1 = 3e-4 sigma_1.
Wherever a truncation falls that low, the Gram is accumulated again in float64 (float64 data: the
unfolding gets an SVD), so that the truncation is as accurate as an SVD's at every error level
(:func:`leading_mode_vectors`). LAPACK calls run on one thread (:mod:`._threads`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from tcompress.decompose._norms import _prod
from tcompress.decompose._threads import one_thread

__all__ = [
    "block_mode_grams",
    "gram_columns",
    "leading_eigh",
    "leading_left_basis",
    "leading_left_singular_vectors",
    "leading_mode_vectors",
    "slice_gram",
    "summed_row_gram",
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
# Elements per block of a transposing copy (16 MB in float32): a few large blocks rather than
# many cache-sized ones, since every block costs two parallel regions and on shared cores each
# region can wait for a descheduled thread (measured on a 12,288 x 128 x 9 view: 2 MB blocks
# 104 ms best / 663 ms median, 16 MB blocks 92 / 160 ms).
_CHUNK_ELEMS = 1 << 22
# Elements of the (a, d, d) stack of per-slice Grams materialised at once.
_STACK_ELEMS = 1 << 22
# From this size on, a float32 Gram's eigendecomposition is done in float32 (_eigenpairs).
_EIGH_FLOAT32_MIN = 512
# The split of a Gram's spectrum after a rank is trusted when the first discarded eigenvalue is
# at least this many times eps(dtype) * trace(Gram). Measured on float32 Grams of unfoldings with
# singular values logspace(0, -7) (64 x 6,912 to 12,288 x 1,152): the rounding moves eigenvalues
# by 0.2 to 0.8 eps32 * lambda_max (with the float32 eigensolver: up to 3), and a truncation whose
# first discarded eigenvalue is below about 5 eps32 * trace loses against the optimum (by 0.01%
# at 5, 0.5% at 0.65, 17x at 2e-4).
_RESOLVED_MARGIN = 64.0
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


def summed_row_gram(matrices: Sequence[Tensor]) -> Tensor:
    """``sum_i M_i @ M_i.T`` over matrices with as many rows each: the Gram of a mode whose fibres
    are the rows of separate matrices (the f_out mode of W from the Conv2d kernels it was stacked
    from, each viewed (f_out, f_in * h * w)), one GEMM per matrix.

    Shapes
    ------
    matrices[i] : (d, n_i), each with a unit-stride side
    return : (d, d)
    """
    first = matrices[0]
    out = torch.zeros(first.shape[0], first.shape[0], dtype=first.dtype, device=first.device)
    for m in matrices:
        out.addmm_(m, m.T)
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


def _eigenpairs(gram: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` leading eigenpairs of a symmetric matrix (float64, descending, sign-fixed).

    A float32 matrix of at least ``_EIGH_FLOAT32_MIN`` rows is decomposed in float32 (half the
    time of float64; its eigenvalues move by about 3 eps32 * lambda_max, of the order of the
    rounding already in a float32 Gram, which :func:`_gram_vectors` accounts for) and the vectors
    are made orthonormal to float64 rounding by one QR, which keeps every leading span. Smaller
    or float64 matrices are decomposed in float64.
    """
    n = gram.shape[0]
    work = gram.detach()
    low = work.dtype == torch.float32 and n >= _EIGH_FLOAT32_MIN
    if not low:
        work = work.to(torch.float64)
    # Symmetrise: rounding in a GEMM-built Gram can leave it asymmetric in the last ulp.
    work = (work + work.T) * 0.5
    with one_thread():
        values, vectors = torch.linalg.eigh(work)
        # LAPACK returns ascending order; the decompositions want the leading pair first.
        values = values[n - count :].flip(0).to(torch.float64)
        vectors = vectors[:, n - count :].flip(1).to(torch.float64)
        if low:
            vectors, _ = torch.linalg.qr(vectors)
    return values, _fix_signs(vectors)


def leading_eigh(gram: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Leading eigenpairs of a symmetric positive semi-definite matrix, in float64.

    Parameters
    ----------
    gram : Tensor
        Symmetric matrix (any float dtype, any device).
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
    ``torch.linalg.eigh`` on one thread (:mod:`tcompress.decompose._threads`): in float64, or
    for a float32 matrix of at least 512 rows in float32 with the vectors then orthonormalised in
    float64 (the float32 solver's rounding is of the order of the float32 Gram's own).
    """
    return _eigenpairs(gram, rank)


def _trace(gram: Tensor) -> float:
    return float(gram.diagonal().sum(dtype=torch.float64))


def _gram_vectors(gram: Tensor, rank: int, ordered: bool = False) -> Tensor | None:
    """The ``rank`` leading eigenvectors (float64) of a Gram matrix, or ``None`` when the rounding
    of a Gram accumulated in its dtype hides the split of the spectrum after ``rank``.

    The split is trusted when the first discarded eigenvalue is at least ``_RESOLVED_MARGIN``
    eps(dtype) trace(Gram). With ``ordered`` (the basis itself matters, not only its span), the
    smallest kept eigenvalue must be resolved as well when nothing is discarded.
    """
    n = gram.shape[0]
    check = rank if rank < n else (n - 1 if ordered else None)
    values, vectors = _eigenpairs(gram, rank if check is None else max(rank, check + 1))
    if check is not None:
        floor = _RESOLVED_MARGIN * torch.finfo(gram.dtype).eps * _trace(gram)
        if float(values[check]) < floor:
            return None
    return vectors[:, :rank]


def _svd_vectors(matrix: Tensor, rank: int) -> Tensor:
    """The ``rank`` leading left singular vectors (float64, sign-fixed) by an SVD in float64: for
    float64 data whose spectrum falls below what its float64 Gram resolves.

    Shapes
    ------
    matrix : (m, n)
    return : (m, min(rank, m, n))
    """
    with one_thread():
        u, _, _ = torch.linalg.svd(matrix.to(torch.float64), full_matrices=False)
    return _fix_signs(u[:, :rank])


def leading_mode_vectors(
    tensor: Tensor,
    ranks: Mapping[int, int],
    grams: Mapping[int, Tensor] | None = None,
    *,
    ordered: bool = False,
) -> dict[int, Tensor]:
    """Leading left singular vectors of several mode unfoldings with ``D_k <= columns``.

    Parameters
    ----------
    tensor : Tensor
        Contiguous tensor of order N, float32 or float64.
    ranks : mapping of int to int
        ``{k: R_k}``: the modes, each with ``D_k`` at most the number of columns of its unfolding,
        and the number of vectors wanted, ``1 <= R_k <= D_k``.
    grams : mapping of int to Tensor, optional
        ``W_(k) W_(k)^T`` (in the dtype of ``tensor``) for modes the caller already has; the
        others are computed together (:func:`block_mode_grams`).
    ordered : bool, default False
        The basis itself matters, not only its span (TR-SVD's first step): the smallest kept
        eigenvalue must be resolved even where nothing is discarded.

    Returns
    -------
    dict of int to Tensor
        ``{k: U_k}``, orthonormal columns in the dtype of ``tensor``, ordered by decreasing
        singular value, each with its largest-magnitude entry positive.

    Shapes
    ------
    tensor : (D_1, ..., D_N)
    return[k] : (D_k, R_k)

    Notes
    -----
    A Gram accumulated in float32 carries rounding of about eps32 * lambda_max in every
    eigenvalue, so singular values below about sqrt(eps32) * sigma_1 = 3e-4 sigma_1 are lost and
    a truncation among them is far from optimal (f_in = 48 of a 64-channel hourglass whose f_in
    unfolding has singular values logspace(0, -7): 6.3e-5 against the optimum 4.6e-6, measured
    before this check existed). The split after ``R_k`` is therefore
    checked (:func:`_gram_vectors`); the modes where it is not resolved get their Gram again,
    accumulated in float64 from a float64 copy of the tensor (one pass for all of them). That Gram
    resolves singular values down to about 1e-8 sigma_1, below the rounding of float32 data
    itself. For float64 data the fallback is an SVD of the unfolding in float64.
    """
    have = dict(grams or {})
    missing = [k for k in ranks if k not in have]
    if missing:
        have.update(block_mode_grams(tensor, missing))
    vectors: dict[int, Tensor] = {}
    unresolved = []
    for k, rank in ranks.items():
        found = _gram_vectors(have[k], rank, ordered)
        if found is None:
            unresolved.append(k)
        else:
            vectors[k] = found
    if unresolved and tensor.dtype == torch.float64:
        for k in unresolved:
            unfolding = tensor.movedim(k, 0).reshape(tensor.shape[k], -1)
            vectors[k] = _svd_vectors(unfolding, ranks[k])
    elif unresolved:
        exact = block_mode_grams(tensor.to(torch.float64), unresolved)
        for k in unresolved:
            vectors[k] = _eigenpairs(exact[k], ranks[k])[1]
    return {k: vectors[k].to(tensor.dtype) for k in ranks}


def _tall_basis(matrix: Tensor, rank: int, ordered: bool = False) -> Tensor:
    """Orthonormal columns spanning the leading left singular vectors of a matrix with more rows
    than columns, in its dtype: the Q factor of ``M V``, ``V`` the leading eigenvectors of the
    column Gram ``M^T M = V S^2 V^T``.

    ``M V = U S``, so Q equals ``U`` up to column signs, and Householder QR stays orthonormal where
    ``S`` has zeros. Where the split is not resolved in the input dtype (:func:`_gram_vectors`),
    float32 data get the Gram, ``M V`` and the QR in float64 (a float32 ``M V`` would mix the
    small directions again); float64 data an SVD.

    Shapes
    ------
    matrix : (m, n), m > n
    return : (m, min(rank, n))
    """
    kept = min(rank, matrix.shape[1])
    v = _gram_vectors(gram_columns(matrix), kept, ordered)
    if v is not None:
        product = matrix @ v.to(matrix.dtype)
        with one_thread():
            q, _ = torch.linalg.qr(product)
        return q
    if matrix.dtype == torch.float64:
        return _svd_vectors(matrix, kept)
    exact = matrix.to(torch.float64)
    v = _eigenpairs(gram_columns(exact), kept)[1]
    product = exact @ v
    with one_thread():
        q, _ = torch.linalg.qr(product)
    return q.to(matrix.dtype)


def leading_left_basis(matrix: Tensor, rank: int) -> Tensor:
    """Orthonormal columns spanning the ``rank`` leading left singular vectors of a matrix.

    Parameters
    ----------
    matrix : Tensor
        A 2-D float32 or float64 matrix (a BLAS-compatible view).
    rank : int
        ``1 <= rank <= min(m, n)``.

    Returns
    -------
    Tensor
        In the dtype of ``matrix``. With ``m <= n``: the eigenvectors of the row Gram ``M M^T``,
        ordered by decreasing singular value, each with its largest-magnitude entry positive;
        with ``m > n``: the Q factor of ``M V`` (:func:`_tall_basis`). Either way the split after
        ``rank`` is checked against the rounding of the Gram and refined in float64 where needed
        (:func:`leading_mode_vectors`).

    Shapes
    ------
    matrix : (m, n)
    return : (m, rank)
    """
    m, n = matrix.shape
    if m > n:
        return _tall_basis(matrix, rank)
    u = _gram_vectors(gram_columns(matrix.T), rank)
    if u is None and matrix.dtype == torch.float64:
        u = _svd_vectors(matrix, rank)
    elif u is None:
        u = _eigenpairs(gram_columns(matrix.T.to(torch.float64)), rank)[1]
    return u.to(matrix.dtype)


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
    with one_thread():
        q, _ = torch.linalg.qr(basis.to(torch.float64), mode="complete")
    return torch.cat([basis, q[:, r:total].to(basis.dtype)], dim=1)


def leading_left_singular_vectors(
    tensor: Tensor, mode: int, rank: int, gram: Tensor | None = None, *, ordered: bool = False
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
    ordered : bool, default False
        The basis itself matters, not only its span (:func:`leading_mode_vectors`).

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
    unfolding: ``W_(k) W_(k)^T = U S^2 U^T`` when ``D_k`` is at most the number of columns ``c``
    (:func:`leading_mode_vectors`); otherwise ``W_(k)^T W_(k) = V S^2 V^T`` (``c x c``) and ``U``
    spans ``W_(k) V`` (:func:`_tall_basis`). Either way a split that the Gram's rounding hides is
    refined in float64. Columns beyond ``c`` (a rank above the unfolding's column count) complete
    the basis orthonormally.
    """
    shape = tuple(tensor.shape)
    d = shape[mode]
    c = tensor.numel() // d
    if gram is not None or d <= c:
        grams = None if gram is None else {mode: gram}
        return leading_mode_vectors(tensor, {mode: rank}, grams, ordered=ordered)[mode]
    # Tall unfolding (more rows than columns): decompose the c x c column Gram instead.
    unfolding = tensor.movedim(mode, 0).reshape(d, c)
    q = _fix_signs(_tall_basis(unfolding, rank, ordered))
    if rank > c:
        # The unfolding has rank <= c: any orthonormal completion spans its range.
        q = _orthonormal_completion(q, rank)
    return q.contiguous()
