"""Multi-mode products: contracting every mode of a tensor with its own matrix.

Everything here works on plain :class:`torch.Tensor` objects of any order, dtype float32 or float64
and any device. A multi-mode product contracts each mode (or run of adjacent small modes, through
the Kronecker product of their matrices) with a single matrix product on a view of the current
tensor, whose output layout is chosen by a small cost model so that the next contraction is again
a plain BLAS call; the input tensor is never copied into a permuted layout. A custom autograd
Function gives the matrix gradients as single Gram-like products instead of one product per batch
entry.

Notation: as in :mod:`tcompress.decompose._grams`, a tensor viewed around a mode is the three-way
array ``X`` of shape ``(a, d, b)`` (sizes before the mode, the mode, sizes after it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from tcompress.decompose._grams import _KRON_GROUP_MAX, _MIN_INNER, slice_gram
from tcompress.decompose._norms import _prod

__all__ = ["multi_mode_product"]

# Rough costs (nanoseconds, 2 cores) used only to choose between contraction plans.
_FLOP_NS = 1.0 / 150.0  # one multiply-add half of a GEMM
_WRITE_NS = 1.0  # writing one entry of a fresh output (first-touch page faults included)
_PERMUTE_NS = 2.0  # one entry of a transposing copy of the final result
_SMALL_GEMM_PENALTY = 2.5  # batched GEMMs whose per-batch output has a side below _MIN_INNER
# Up to this many contraction groups, every in-place / moved layout sequence is costed.
_PLAN_SEARCH_MAX = 10


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
        raise ValueError(
            f"matrices has {len(matrices)} entries; expected {len(shape)}, one per mode of tensor"
        )
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
