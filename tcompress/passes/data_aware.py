"""Data-aware refinement: fit the factors to what every block convolution computes on real inputs.

A decomposition of W minimises ``||W - W_hat||``, which weighs every direction of every kernel the
same. What the network needs is that each convolution's *output* stays close on the inputs it
actually sees. With ``X`` the input patches of a layer (im2col columns, one per output position),
``M = E[x x^T]`` their second moment and ``s`` the scale of the BatchNorm that follows (its
``gamma / sqrt(var + eps)``, so an error counts as much as it moves the normalised activations),
the expected squared error of that layer's normalised output is

    || diag(s) (W_l - W_hat_l) M^(1/2) ||_F^2 = tr( diag(s)^2 E_l M E_l^T ),   E_l = W_l - W_hat_l

with ``W_l`` laid out as (f_out, f_in * h * w). The sum over the layers is a smooth function of the
factors that needs the images only once: the moments ``M`` are gathered from the uncompressed
network in one pass, after which every evaluation is a few small matrix products, so the factors
can be fitted by L-BFGS in seconds (the "data reconstruction" idea of tensorized
spectrum-preserving compression, applied jointly to the one tensor all layers share).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tcompress.errors import DataError
from tcompress.models.io import heatmaps_of

log = logging.getLogger(__name__)

#: Positions sampled per image and layer when gathering moments: enough for a well-conditioned
#: estimate at the outer levels, where using every position would dominate the cost.
POSITIONS_PER_IMAGE = 256

#: L-BFGS iterations of :func:`refine_to_data` by default: on the bundled model most of the
#: output error that can go goes in the first hundred.
DATA_AWARE_ITERATIONS = 100


@dataclass
class BlockStatistics:
    """What the data-aware objective needs from the uncompressed network.

    Shapes
    ------
    moments: (L, f_in * h * w, f_in * h * w), second moments of each layer's input patches, the
    layers in W's row-major order over (stack, depth, pathway, block).
    scales: (L, f_out), the output scale of each layer's BatchNorm.
    """

    moments: torch.Tensor
    scales: torch.Tensor
    images: int


@dataclass
class DataAwareReport:
    """Relative output error (square root of the objective over the same sum for W itself)
    before and after the refinement, the iterations run and the time taken."""

    error_before: float
    error_after: float
    iterations: int
    images: int
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def block_statistics(
    model: nn.Module,
    conv_names: Sequence[str],
    batches: Iterable[torch.Tensor | dict],
    *,
    max_images: int | None = None,
    positions: int = POSITIONS_PER_IMAGE,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> BlockStatistics:
    """Gather :class:`BlockStatistics` from forward passes of the uncompressed ``model``.

    Parameters
    ----------
    model
        The dense network the T-Net came from (in evaluation mode during the pass).
    conv_names
        The convolutions stacked into W, in W's row-major order (``KernelFamily.names``).
    batches
        Image batches, or dicts with an ``"image"`` entry; labels are not used.
    max_images
        Stop once this many images have been seen.
    positions
        Output positions sampled per image and layer (all of them when a map has fewer).
    seed
        Seed of the position sampling.
    progress
        Called with the number of images seen so far.
    """
    (stats,) = group_statistics(
        model,
        [conv_names],
        batches,
        max_images=max_images,
        positions=positions,
        seed=seed,
        progress=progress,
    )
    return stats


def group_statistics(
    model: nn.Module,
    groups: Sequence[Sequence[str]],
    batches: Iterable[torch.Tensor | dict],
    *,
    max_images: int | None = None,
    positions: int = POSITIONS_PER_IMAGE,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[BlockStatistics]:
    """:func:`block_statistics` of several tensors' convolutions (``groups``: each tensor's
    convolutions in its row-major order, as ``KernelFamily.names``), gathered in one pass over
    ``batches``: one :class:`BlockStatistics` per group."""
    convs = [[model.get_submodule(name) for name in names] for names in groups]
    device = convs[0][0].weight.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    moments = []
    for members in convs:
        size = members[0].weight[0].numel()
        moments.append(torch.zeros(len(members), size, size, dtype=torch.float64, device=device))
    counts = [[0] * len(members) for members in convs]

    def hook(g: int, layer: int, conv: torch.nn.Conv2d):
        def gather(module, inputs, output):
            x = inputs[0].detach()
            patches = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
            n, k, p = patches.shape
            if p > positions:
                pick = torch.randint(p, (n, positions), generator=generator).to(x.device)
                patches = patches.gather(2, pick[:, None, :].expand(n, k, positions))
            flat = patches.transpose(1, 2).reshape(-1, k).double()
            moments[g][layer] += flat.T @ flat
            counts[g][layer] += flat.shape[0]

        return gather

    handles = [
        conv.register_forward_hook(hook(g, i, conv))
        for g, members in enumerate(convs)
        for i, conv in enumerate(members)
    ]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad():
            for batch in batches:
                images = batch["image"] if isinstance(batch, dict) else batch
                if max_images is not None:
                    images = images[: max_images - seen]
                heatmaps_of(model, images.to(device))
                seen += images.shape[0]
                if progress is not None:
                    progress(seen)
                if max_images is not None and seen >= max_images:
                    break
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not seen:
        raise DataError(
            "batches gave no images; expected at least one image to gather the layers' inputs"
        )
    out = []
    for names, members, moment, count in zip(groups, convs, moments, counts):
        unused = [name for name, c in zip(names, count) if not c]
        if unused:
            raise DataError(
                f"the network's forward pass did not run convolution '{unused[0]}'; expected "
                "every stacked convolution to see the images"
            )
        moment /= torch.tensor(count, dtype=torch.float64, device=device)[:, None, None]
        scales = []
        for name, conv in zip(names, members):
            bn = batchnorm_after(model, name)
            if bn is None or bn.running_var is None:
                scales.append(torch.ones(conv.out_channels, device=device))
            else:
                gamma = bn.weight.detach() if bn.affine else 1.0
                scales.append(gamma / torch.sqrt(bn.running_var + bn.eps))
        out.append(BlockStatistics(moment.float(), torch.stack(scales).float(), seen))
    return out


def batchnorm_after(model: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm that directly follows the convolution ``conv_name`` in ``model``, if any:
    a pair a module declares in its ``bn_after_conv``, or the next module of an
    ``nn.Sequential``."""
    parts = conv_name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        parent = model.get_submodule(".".join(parts[:cut]))
        rest = ".".join(parts[cut:])
        for conv, bn in getattr(parent, "bn_after_conv", ()):
            if conv == rest:
                found = parent.get_submodule(bn)
                return found if isinstance(found, nn.modules.batchnorm._BatchNorm) else None
    parent = model.get_submodule(".".join(parts[:-1]))
    if isinstance(parent, nn.Sequential):
        children = list(parent)
        i = next(k for k, child in enumerate(children) if child is model.get_submodule(conv_name))
        if i + 1 < len(children) and isinstance(children[i + 1], nn.BatchNorm2d):
            return children[i + 1]
    return None


def output_error(
    W_hat: torch.Tensor, W: torch.Tensor, stats: BlockStatistics
) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective, the same objective for ``W_hat = 0``): the summed squared error of every
    layer's normalised output, and the summed squared normalised outputs.

    Shapes
    ------
    W_hat, W: (grid modes..., f_in, f_out, h, w), e.g. (stack, depth, pathway, block, f_in,
    f_out, h, w).
    """
    layers = stats.moments.shape[0]

    def as_matrices(t: torch.Tensor) -> torch.Tensor:  # (L, f_out, f_in * h * w), scaled
        f_in, f_out = t.shape[-4], t.shape[-3]
        rows = t.reshape(layers, f_in, f_out, -1).transpose(1, 2).reshape(layers, f_out, -1)
        return rows * stats.scales[:, :, None]

    target = as_matrices(W)
    return (
        output_energy(as_matrices(W_hat) - target, stats.moments),
        output_energy(target, stats.moments),
    )


def output_energy(rows: torch.Tensor, moments: torch.Tensor) -> torch.Tensor:
    """sum_l tr(K_l M_l K_l^T): the expected squared output of kernels K_l (their rows already
    scaled by the BatchNorm scales) on inputs of second moments M_l; one layer or a batch.

    Shapes
    ------
    rows: (f_out, f_in * h * w) or (L, f_out, f_in * h * w); moments: (f_in * h * w,) * 2 or
    (L, f_in * h * w, f_in * h * w).
    """
    return (torch.matmul(rows, moments) * rows).sum()


def refine_to_data(
    tensor: torch.nn.Module,
    W: torch.Tensor,
    stats: BlockStatistics,
    *,
    iterations: int = DATA_AWARE_ITERATIONS,
) -> DataAwareReport:
    """Fit the factors of ``tensor`` (a T-Net's factorized tensor, any method) in place so that
    every block convolution's normalised output stays close to the original's on the data that
    gave ``stats``; L-BFGS from the current factors (the HOSVD, TT-SVD or CP-ALS solution).

    Parameters
    ----------
    tensor
        A T-Net's shared tensor (:class:`~tcompress.methods.base.SharedTensor`) or a layer-wise
        network's chains (:class:`~tcompress.layerwise.StackedChains`); its ``full()`` is W's
        estimate.
    W
        The uncompressed tensor (stack, depth, pathway, block, f_in, f_out, h, w).
    iterations
        L-BFGS iterations (each with its line search).
    """
    start = time.perf_counter()
    params = [p for p in tensor.parameters() if p.requires_grad]
    W = W.detach().to(params[0])
    with torch.no_grad():
        error, total = output_error(tensor.full(), W, stats)
    before = math.sqrt(float(error / total))
    best = {id(p): p.detach().clone() for p in params}
    best_error = float(error)
    optimizer = torch.optim.LBFGS(
        params, lr=1, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = output_error(tensor.full(), W, stats)[0] / total
        loss.backward()
        for p in params:  # L-BFGS flattens the gradients with view()
            if p.grad is not None and not p.grad.is_contiguous():
                p.grad = p.grad.contiguous()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        error = float(output_error(tensor.full(), W, stats)[0])
        if not math.isfinite(error) or error > best_error:  # never leave it worse than it came
            for p in params:
                p.copy_(best[id(p)])
            error = best_error
    report = DataAwareReport(
        error_before=before,
        error_after=math.sqrt(error / float(total)),
        iterations=int(optimizer.state[params[0]].get("n_iter", 0)),
        images=stats.images,
        seconds=time.perf_counter() - start,
    )
    log.info(
        "data-aware refinement: output error %.4f -> %.4f", report.error_before, report.error_after
    )
    return report


#: Modes larger than this get their truncation costs measured at this many ranks (both ends
#: included) and interpolated in between.
COST_POINTS = 17


def mode_costs(
    W: torch.Tensor,
    stats: BlockStatistics,
    factors: Sequence[torch.Tensor],
    *,
    points: int = COST_POINTS,
) -> list[list[float]]:
    """What truncating each mode alone costs the network's block convolutions, measured on data.

    ``costs[k][r]`` is the relative output error (:func:`output_error` over the same sum for W
    itself, not square-rooted) of W with mode ``k`` projected on the first ``r`` columns of
    ``factors[k]`` (orthonormal, leading first: the HOSVD's), every other mode kept: 1 at
    ``r = 0``, 0 at full rank, never increasing with ``r``. These costs replace the discarded
    singular values of the HOSVD bound in the greedy rank allocation
    (:func:`~tcompress.methods.selection.allocate`), so that a rank is lowered where the
    network's normalised outputs lose least, in every mode: the grid modes (which layers may
    share structure) and the kernel modes as well as the channels.

    Shapes
    ------
    W: (stack, depth, pathway, block, f_in, f_out, h, w); factors[k]: (D_k, D_k).
    """
    W = W.detach().to(stats.moments)

    def projection(k: int, u: torch.Tensor):
        u = u.detach().to(W)
        return u.shape[0], lambda r: mode_dot(W, u[:, :r] @ u[:, :r].T, k)

    return truncation_costs(
        W, stats, [projection(k, u) for k, u in enumerate(factors)], points=points
    )


def truncation_costs(
    W: torch.Tensor,
    stats: BlockStatistics,
    truncations: Sequence[tuple[int, Callable[[int], torch.Tensor]]],
    *,
    points: int = COST_POINTS,
) -> list[list[float]]:
    """:func:`mode_costs` for any truncation: ``truncations[k]`` is (the largest value of rank
    ``k``, ``f(r)``: W with rank ``k`` at ``r`` and every other rank full). The cost is measured
    at up to ``points`` values of each rank (every value when it has no more) and interpolated
    linearly between them; 1 at ``r = 0``, 0 at the largest value, never increasing."""
    W = W.detach().to(stats.moments)
    with torch.no_grad():
        total = float(output_error(torch.zeros_like(W), W, stats)[1]) or 1.0
        costs = []
        for size, keep in truncations:
            if size <= points:
                grid = list(range(size + 1))
            else:
                grid = sorted({round(i * size / (points - 1)) for i in range(points)})
            measured = {0: 1.0, size: 0.0}
            for r in grid:
                if 0 < r < size:
                    measured[r] = float(output_error(keep(r).to(W), W, stats)[0]) / total
            known = sorted(measured)
            values = []
            for r in range(size + 1):
                right = next(i for i in known if i >= r)
                left = max(i for i in known if i <= r)
                t = 0.0 if right == left else (r - left) / (right - left)
                values.append((1 - t) * measured[left] + t * measured[right])
            for r in range(1, size + 1):  # a larger rank never costs more
                values[r] = min(values[r], values[r - 1])
            costs.append(values)
    return costs


def mode_dot(x: torch.Tensor, matrix: torch.Tensor, mode: int) -> torch.Tensor:
    """x x_mode matrix, for a (D, D) matrix acting on mode ``mode``."""
    return torch.movedim(torch.tensordot(x, matrix, dims=([mode], [1])), -1, mode)
