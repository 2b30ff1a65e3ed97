"""Dense kernels shared by the Tucker and tensor-train decompositions.

Everything here works on plain :class:`torch.Tensor` objects of any order, dtype float32 or float64
and any device. The kernels avoid permuted copies of the large input tensor: Gram matrices of mode
unfoldings are accumulated with BLAS calls on strided views (or on cache-sized transposed blocks
when the mode is followed by only a few entries), and multi-mode products contract each mode with
a single matrix product whose output layout is chosen so that the next contraction is again a
plain BLAS call.

Notation: a tensor ``T`` of order ``N`` viewed around a mode (or a run of adjacent modes) is the
three-way array ``X`` of shape ``(a, d, b)`` where ``a`` is the product of the sizes before the
mode, ``d`` the size of the mode and ``b`` the product of the sizes after it. The mode unfolding
is then the ``d x (a*b)`` matrix whose columns are the fibres ``X[alpha, :, beta]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tcompress.errors import RankError

try:  # SciPy's LAPACK can return only the leading eigenpairs (syevr), torch cannot.
    import scipy.linalg as _scipy_linalg
except ImportError:  # pragma: no cover - scipy is a declared dependency
    _scipy_linalg = None

__all__ = [
    "balancing_scale",
    "block_mode_grams",
    "gram_columns",
    "leading_eigh",
    "leading_left_singular_vectors",
    "multi_mode_product",
    "relative_error_from_energy",
    "slice_gram",
    "squared_norm",
    "squared_distance",
]

# Adjacent modes whose sizes multiply to at most this share one Gram matrix (their individual Grams
# are partial traces of it); one pass over the tensor then serves several small modes.
_GRAM_GROUP_MAX = 16
# Adjacent modes whose sizes multiply to at most this are contracted through one Kronecker factor.
_KRON_GROUP_MAX = 128
# A trailing extent below this makes batched BLAS on strided views inefficient.
_MIN_INNER = 64
# Elements per block of a transposing copy: about 2 MB in float32, so the block stays in cache.
_CHUNK_ELEMS = 1 << 19
# Elements of the (a, d, d) stack of per-slice Grams materialised at once.
_STACK_ELEMS = 1 << 22
# From this size on, the symmetric eigensolver computes only the requested leading eigenpairs.
_EIGH_SUBSET_MIN = 256
# Column blocks of at least this width when a large Gram is built from its upper triangle only.
_SYM_BLOCK_MIN = 256
# Below this squared relative error, ||W||^2 - ||W_hat||^2 loses too many digits to cancellation
# (in units of the machine epsilon of the input dtype); the error is then computed explicitly.
_CANCELLATION_EPS = 2.0e4


def check_decomposable(tensor: Tensor) -> None:
    """A float32 or float64 tensor of order >= 1, else a clear error."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"expected a float32 or float64 tensor, got {tensor.dtype}")
    if tensor.ndim == 0:
        raise RankError("cannot decompose a 0-dimensional tensor; expected at least one mode")


def _prod(values: Sequence[int]) -> int:
    return math.prod(int(v) for v in values)


# --------------------------------------------------------------------------------------------
# Norms and relative errors
# --------------------------------------------------------------------------------------------


def squared_norm(tensor: Tensor) -> float:
    """Squared Frobenius norm accumulated in float64 without a float64 copy of the tensor.

    Parameters
    ----------
    tensor : Tensor
        Any shape, float32 or float64.

    Returns
    -------
    float
        ``sum(tensor**2)`` with float64 accuracy (for float32 input: the norms of rows of 256
        entries are taken in float32, whose pairwise summation is accurate to a few ulps, and their
        squares are summed in float64, so the relative error is about ``eps32 / sqrt(rows)``).

    Shapes
    ------
    tensor : (any)
    """
    flat = tensor.detach().reshape(-1)
    if flat.dtype == torch.float64:
        return float(torch.dot(flat, flat))
    width = 256
    full = (flat.numel() // width) * width
    total = 0.0
    if full:
        rows = torch.linalg.vector_norm(flat[:full].view(-1, width), dim=1)
        total += float(rows.double().square().sum())
    if full < flat.numel():
        total += float(torch.linalg.vector_norm(flat[full:]).double().square())
    if not math.isfinite(total) or total < 1e-30:
        # Squares beyond the float32 range (|x| > 1e19) or below it: redo in float64, by blocks.
        step = 1 << 20
        blocks = (flat[s : s + step].double() for s in range(0, flat.numel(), step))
        total = sum(float(torch.dot(block, block)) for block in blocks)
    return total


def balancing_scale(norm_sq: float, numel: int, dtype: torch.dtype) -> float:
    """A power of two that brings the tensor's entries near unit size, or 1.0 if not needed.

    Gram matrices hold sums of squares and would overflow (or underflow) in the input dtype for
    extreme magnitudes; scaling by a power of two is exact and the decompositions are
    equivariant to it (the core is scaled back).

    Parameters
    ----------
    norm_sq : float
        ``||W||^2`` in float64.
    numel : int
        Number of entries of ``W``.
    dtype : torch.dtype
        float32 or float64.

    Returns
    -------
    float
        ``2**k`` with ``k`` an integer; 1.0 when every Gram entry stays well inside the range.
    """
    limit = 1e30 if dtype == torch.float32 else 1e250
    mean_sq = norm_sq / max(numel, 1)
    if norm_sq == 0.0 or (norm_sq < limit and mean_sq > 1.0 / limit):
        return 1.0
    # Make the root-mean-square entry about 1.
    return 2.0 ** -round(0.5 * math.log2(mean_sq))


def squared_distance(tensor: Tensor, other: Tensor) -> float:
    """``||tensor - other||^2`` in float64, subtracting block by block to bound temporary memory.

    Parameters
    ----------
    tensor, other : Tensor
        Same shape and dtype.

    Returns
    -------
    float
        The squared Frobenius distance.

    Shapes
    ------
    tensor, other : (any), identical
    """
    a = tensor.detach().reshape(-1)
    b = other.detach().reshape(-1)
    step = 1 << 22
    return sum(squared_norm(a[s : s + step] - b[s : s + step]) for s in range(0, a.numel(), step))


def relative_error_from_energy(norm_sq: float, kept_sq: float, dtype: torch.dtype) -> float | None:
    """Relative error of an orthogonal projection from the energy it keeps.

    For an orthogonal projection ``W_hat = P W`` Pythagoras gives
    ``||W - W_hat||^2 = ||W||^2 - ||W_hat||^2``, and ``||W_hat||`` is the norm of the core.

    Parameters
    ----------
    norm_sq : float
        ``||W||^2`` in float64.
    kept_sq : float
        ``||W_hat||^2`` in float64.
    dtype : torch.dtype
        The dtype the projection was computed in; sets the rounding level.

    Returns
    -------
    float or None
        ``||W - W_hat|| / ||W||``, or ``None`` when the difference is so small that rounding of the
        two norms (a few ulps of ``dtype`` each) could dominate it; the caller must then measure
        the error on an explicit reconstruction.
    """
    if norm_sq == 0.0:
        return 0.0
    # The difference of two nearly equal energies: clamp rounding below zero.
    rel_sq = max(norm_sq - kept_sq, 0.0) / norm_sq
    if rel_sq < _CANCELLATION_EPS * torch.finfo(dtype).eps:
        return None
    return math.sqrt(rel_sq)


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
    """Extend orthonormal columns to ``total`` orthonormal columns (deterministic, local RNG).

    Shapes
    ------
    basis : (n, r)
    return : (n, total), r <= total <= n
    """
    n, r = basis.shape
    generator = torch.Generator(device="cpu").manual_seed(0)
    extra = torch.randn(n, total - r, generator=generator, dtype=torch.float64)
    extra = extra.to(basis.device)
    # In float64: the random block can be ill-conditioned once the basis is projected out, and
    # its QR would amplify float32 rounding. The projection is applied twice (classical
    # Gram-Schmidt needs the second pass to be orthogonal to working precision).
    b64 = basis.to(torch.float64)
    for _ in range(2):
        extra = extra - b64 @ (b64.T @ extra)
    q, _ = torch.linalg.qr(extra)
    return torch.cat([basis, q.to(basis.dtype)], dim=1)


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


# --------------------------------------------------------------------------------------------
# Multi-mode products
# --------------------------------------------------------------------------------------------


def _contraction_groups(
    shape: Sequence[int], matrices: Sequence[Tensor | None]
) -> list[tuple[list[int], Tensor]]:
    """Runs of adjacent modes contracted together through the Kronecker product of their matrices.

    The Kronecker product ``M_k (x) M_{k+1}`` acts on the row-major combined index
    ``i_k * D_{k+1} + i_{k+1}``, so contracting the combined mode with it equals contracting both.
    """
    groups: list[tuple[list[int], Tensor]] = []
    run: list[int] = []
    for k, mat in enumerate(matrices):
        if mat is None:
            if run:
                groups.append((run, _kron_all([matrices[m] for m in run])))
            run = []
            continue
        if run and _prod(shape[m] for m in run) * shape[k] > _KRON_GROUP_MAX:
            groups.append((run, _kron_all([matrices[m] for m in run])))
            run = []
        if shape[k] > _KRON_GROUP_MAX:
            groups.append(([k], mat))
        else:
            run.append(k)
    if run:
        groups.append((run, _kron_all([matrices[m] for m in run])))
    return groups


def _kron_all(mats: Sequence[Tensor | None]) -> Tensor:
    # (A (x) B)[i * p + k, j * q + l] = A[i, j] B[k, l] for B of shape (p, q): an outer product
    # reshaped row-major (written out because torch.kron rejects some strided size-1 views).
    out = mats[0]
    for m in mats[1:]:
        outer = out[:, None, :, None] * m[None, :, None, :]
        out = outer.reshape(out.shape[0] * m.shape[0], out.shape[1] * m.shape[1])
    return out


def _contract_middle(x: Tensor, mat: Tensor, move: bool) -> Tensor:
    """Contract the middle axis of ``x`` with ``mat``: one GEMM or batched GEMM, no copy.

    Explicit ``mm`` / ``bmm`` rather than ``torch.matmul``, whose folding heuristics copy
    operands in some layouts.

    Shapes
    ------
    x : (a, d, b)
    mat : (d, e)
    return : (a, e, b), or (a, b, e) if ``move``
    """
    a, d, b = x.shape
    e = mat.shape[1]
    if b == 1:
        # (a, d) @ (d, e): the layouts (a, e, 1) and (a, 1, e) coincide.
        out = torch.mm(x.reshape(a, d), mat)
        return out.view(a, 1, e) if move else out.view(a, e, 1)
    if move:
        # X[alpha].T @ M for every alpha: reads X transposed, writes the new axis last.
        return torch.bmm(x.transpose(1, 2), mat.expand(a, d, e))
    if a == 1:
        return torch.mm(mat.T, x[0]).unsqueeze(0)
    # M.T @ X[alpha] for every alpha: the layout is kept.
    return torch.bmm(mat.T.expand(a, e, d), x)


class _ContractMiddle(torch.autograd.Function):
    """Autograd for :func:`_contract_middle` with a single-GEMM gradient for the matrix.

    Differentiating the batched GEMM generically would materialise one ``d x e`` product per slice
    of the batch before summing them; here ``dL/dM = sum_alpha X[alpha] G[alpha]^T`` goes through
    :func:`slice_gram`. The gradient for ``x`` contracts the output gradient with ``M^T``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mat: Tensor, move: bool) -> Tensor:
        ctx.save_for_backward(x, mat)
        ctx.move = move
        return _contract_middle(x, mat, move)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, mat = ctx.saved_tensors
        a, d, b = x.shape
        e = mat.shape[1]
        # Bring the gradient to the (a, e, b) layout of the un-moved output (a view, no copy).
        grad = grad.transpose(1, 2) if ctx.move else grad
        grad_x = grad_mat = None
        if ctx.needs_input_grad[0]:
            # dL/dX[alpha] = M @ G[alpha]: the adjoint contraction, back to the (a, d, b) layout.
            if b == 1:
                grad_x = torch.mm(grad.reshape(a, e), mat.T).view(a, d, 1)
            elif a == 1:
                grad_x = torch.mm(mat, grad[0]).unsqueeze(0)
            else:
                grad_x = torch.bmm(mat.expand(a, d, e), grad)
        if ctx.needs_input_grad[1]:
            # dL/dM[i, o] = sum_{alpha, beta} X[alpha, i, beta] G[alpha, o, beta].
            grad_mat = slice_gram(x, grad)
        return grad_x, grad_mat, None


# Rough costs (nanoseconds, 2 cores) used only to choose between contraction plans.
_FLOP_NS = 1.0 / 150.0  # one multiply-add half of a GEMM
_WRITE_NS = 1.0  # writing one entry of a fresh output (first-touch page faults included)
_PERMUTE_NS = 2.0  # one entry of a transposing copy of the final result
_SMALL_GEMM_PENALTY = 2.5  # batched GEMMs whose per-batch output has a side below _MIN_INNER
# Up to this many contraction groups, every in-place / moved layout sequence is costed.
_PLAN_SEARCH_MAX = 10


def _step_cost(a: int, d: int, b: int, e: int) -> float:
    """Estimated time of contracting the middle mode of an ``(a, d, b)`` view into ``e``."""
    flops = 2.0 * a * b * d * e
    # A batch (a > 1) of GEMMs whose output (e x b, or b x e) has a short side runs slowly.
    slow = a > 1 and b > 1 and min(b, e) < _MIN_INNER
    return flops * _FLOP_NS * (_SMALL_GEMM_PENALTY if slow else 1.0) + a * b * e * _WRITE_NS


_Axis = tuple[str, int, int]  # ("mode", k, size) for an input mode, ("group", g, size) for outputs


def _locate(axes: list[_Axis], modes: list[int]) -> tuple[int, int, int]:
    """Position of a group's first mode in the layout, and the sizes before and after the group."""
    p = next(i for i, (kind, idx, _) in enumerate(axes) if kind == "mode" and idx == modes[0])
    a = _prod(size for _, _, size in axes[:p])
    b = _prod(size for _, _, size in axes[p + len(modes) :])
    return p, a, b


def _plan_contractions(
    shape: Sequence[int], groups: list[tuple[list[int], Tensor]]
) -> list[tuple[int, bool]]:
    """Order of the group contractions and, for each, whether its output moves to the last axis.

    The order is fixed by a rule: most-reducing groups first (the tensor shrinks early), and
    among equal ratios the inefficient short-trailing contractions are done while the tensor is
    smallest. The layout choices are then searched exhaustively (up to ``_PLAN_SEARCH_MAX``
    groups, else greedily) with :func:`_step_cost` plus the cost of the final transposing copy
    back to natural order.
    """

    def ratio(g: int) -> float:
        d, e = groups[g][1].shape
        return e / d

    def first_trailing(g: int) -> int:
        return _prod(shape[groups[g][0][-1] + 1 :])

    def order_key(g: int) -> tuple[float, int]:
        r = ratio(g)
        # Shrinking: long trailing extents first. Growing: short ones first.
        return (r, -first_trailing(g) if r < 1 else first_trailing(g))

    order = sorted(range(len(groups)), key=order_key)
    out_numel = _prod(shape[k] for k in range(len(shape)))
    for modes, mat in groups:
        out_numel = out_numel // _prod(shape[m] for m in modes) * mat.shape[1]
    best: list = [math.inf, []]

    def explore(step: int, axes: list[_Axis], cost: float, plan: list[tuple[int, bool]]) -> None:
        if cost >= best[0]:
            return
        if step == len(order):
            flat = [
                m for kind, idx, _ in axes for m in ([idx] if kind == "mode" else groups[idx][0])
            ]
            if flat != sorted(flat):
                cost += out_numel * _PERMUTE_NS
            if cost < best[0]:
                best[0], best[1] = cost, plan
            return
        g = order[step]
        modes, mat = groups[g]
        d, e = mat.shape
        p, a, b = _locate(axes, modes)
        new = ("group", g, e)
        cost += _step_cost(a, d, b, e)
        in_place = axes[:p] + [new] + axes[p + len(modes) :]
        moved = axes[:p] + axes[p + len(modes) :] + [new]
        if len(order) > _PLAN_SEARCH_MAX:
            # Too many groups for the exhaustive search: move only short trailing extents.
            move = 1 < b < _MIN_INNER and a > 1
            explore(step + 1, moved if move else in_place, cost, plan + [(g, move)])
            return
        # Output in place: (a, e, b).
        explore(step + 1, in_place, cost, plan + [(g, False)])
        if a > 1 and b > 1:
            # Output moved to the end: (a, b, e).
            explore(step + 1, moved, cost, plan + [(g, True)])

    explore(0, [("mode", k, shape[k]) for k in range(len(shape))], 0.0, [])
    return best[1]


def multi_mode_product(tensor: Tensor, matrices: Sequence[Tensor | None]) -> Tensor:
    """Contract every mode ``k`` of ``tensor`` with ``matrices[k]`` (skipped where ``None``).

    ``out[.., o_k, ..] = sum_{i_k} tensor[.., i_k, ..] * matrices[k][i_k, o_k]`` for every ``k``.
    With ``matrices[k] = U_k`` this is the projection ``W x_k U_k^T``; with ``U_k^T`` the expansion
    ``G x_k U_k``. Differentiable with respect to the tensor and every matrix.

    Parameters
    ----------
    tensor : Tensor
        Tensor of order N.
    matrices : sequence of Tensor or None
        ``N`` entries; ``matrices[k]`` has ``D_k`` rows.

    Returns
    -------
    Tensor
        Contiguous result in the natural mode order.

    Shapes
    ------
    tensor : (D_1, ..., D_N)
    matrices[k] : (D_k, E_k)
    return : (E_1, ..., E_N), with ``E_k = D_k`` where ``matrices[k]`` is None

    Notes
    -----
    Adjacent small modes are contracted together through the Kronecker product of their matrices.
    Each contraction views the current tensor as ``(a, d, b)`` around the contracted mode and is
    one (batched) matrix product with no copy: ``M^T @ X`` keeps the layout, ``X^T @ M`` moves the
    new mode to the last axis, which lengthens the trailing extent of the modes still to come.
    The order and the layouts come from :func:`_plan_contractions`; the result is permuted back to
    natural order at the end if needed.
    """
    shape = tuple(tensor.shape)
    if len(matrices) != len(shape):
        raise ValueError(f"expected {len(shape)} matrices, got {len(matrices)}")
    groups = _contraction_groups(shape, matrices)
    axes: list[_Axis] = [("mode", k, shape[k]) for k in range(len(shape))]
    work = tensor
    for g, move in _plan_contractions(shape, groups):
        modes, mat = groups[g]
        d, e = mat.shape
        p, a, b = _locate(axes, modes)
        new: _Axis = ("group", g, e)
        x = work.reshape(a, d, b)
        if torch.is_grad_enabled() and (x.requires_grad or mat.requires_grad):
            work = _ContractMiddle.apply(x, mat, move)
        else:
            work = _contract_middle(x, mat, move)
        if move:
            # (a, b, e): the contracted group becomes the last axis.
            del axes[p : p + len(modes)]
            axes.append(new)
        else:
            # (a, e, b): the contracted group stays in place.
            axes[p : p + len(modes)] = [new]
    # Split every group axis into its modes' output sizes and return to natural order.
    out_sizes = [
        shape[k] if matrices[k] is None else matrices[k].shape[1] for k in range(len(shape))
    ]
    flat: list[int] = []
    for kind, idx, _ in axes:
        flat.extend([idx] if kind == "mode" else groups[idx][0])
    work = work.reshape([out_sizes[k] for k in flat])
    perm = [flat.index(k) for k in range(len(shape))]
    if perm != list(range(len(shape))):
        work = work.permute(perm)
    return work.contiguous()
