"""Between CP and Tucker: a Tucker core that is itself low-rank or block-sparse, at one budget.

CP's super-diagonal core fine-tuned best at 3x (the comparison at the 5-minute recipe); Tucker's
dense core least. Two structures lie between them:

- ``tucker-cp``: W = G x_1 U_1 ... x_N U_N whose core G is a CP tensor of rank R, i.e. a CP
  decomposition whose factors are U_k A_k, confined to the Tucker factors' spans. Parameters:
  sum_k D_k R_k + R (1 + sum_k R_k). Start: the HOSVD, then CP-ALS of the core.
- ``block``: a Tucker core that is block-diagonal in (f_in, f_out): after the shared channel
  projections, every layer is a grouped convolution of ``groups`` groups. Parameters:
  prod_{k not channel} R_k * R_in R_out / groups + sum_k D_k R_k. Start: the HOSVD with the
  core's off-diagonal blocks cut.

Each structure is rated at the budget of the 3x T-Nets (the whole network about 3x smaller)
against the Tucker T-Net (the HOSVD, ranks 2,2,3,2,32,32,2,2) and the CP T-Net (CP-ALS): once
as started and once after a least-squares fit of all its parameters to W (L-BFGS, ``--fit``
iterations), by

- ``relative_error``: ||W - W_hat|| / ||W||;
- ``agreement``: what ``tcompress convert --ratio --data`` searches on: how often the network,
  its kernels replaced and BatchNorm re-estimated on 64 training images, puts each joint where
  the original does on 64 others;
- ``pckh``: PCKh@0.5 of the network so converted, BatchNorm re-estimated on 512 training images,
  on ``--val-samples`` images of the validation split.

    python benchmarks/bench_core_structure.py           # docs/records/core_structure.json

Nothing here is fine-tuned: the agreement and the converted PCKh are the criteria that ordered
Tucker rank sets like their fine-tuned accuracy (``docs/records/rank_criteria.json``).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import write_json  # noqa: E402

#: The structures rated: (name, kind, ranks, the structure's own setting).
CANDIDATES = (
    ("Tucker 2,2,3,2,32,32,2,2", "tucker", (2, 2, 3, 2, 32, 32, 2, 2), None),
    ("CP", "cp", None, None),
    ("Tucker-CP, channel ranks 24", "tucker-cp", (2, 4, 3, 2, 24, 24, 3, 3), None),
    ("Tucker-CP, channel ranks 16", "tucker-cp", (2, 4, 3, 2, 16, 16, 3, 3), None),
    ("block core, 2 groups", "block", (2, 4, 3, 2, 32, 32, 2, 2), 2),
    ("block core, 4 groups", "block", (2, 4, 3, 2, 30, 30, 3, 3), 4),
)
#: f_in and f_out among W's modes (stack, depth, pathway, block, f_in, f_out, h, w).
CHANNELS = (4, 5)


def block_mask(ranks, groups: int) -> torch.Tensor:
    """1 where (f_in, f_out) fall in the same of ``groups`` equal channel groups."""
    r_in, r_out = ranks[CHANNELS[0]], ranks[CHANNELS[1]]
    gi = torch.arange(r_in) * groups // r_in
    go = torch.arange(r_out) * groups // r_out
    pair = (gi[:, None] == go[None, :]).double()
    shape = [1] * len(ranks)
    shape[CHANNELS[0]], shape[CHANNELS[1]] = r_in, r_out
    return pair.reshape(shape).expand(*ranks).contiguous()


def own(x: torch.Tensor) -> torch.Tensor:
    """A contiguous float64 copy (L-BFGS flattens every gradient)."""
    return x.detach().to(torch.float64).clone(memory_format=torch.contiguous_format)


@dataclass
class Structured:
    """Trainable parameters and the function that rebuilds W from them."""

    params: list[torch.Tensor]
    rebuild: Callable[[], torch.Tensor]
    count: int


def start(kind: str, W: torch.Tensor, ranks, setting, cp_rank: int) -> Structured:
    from tcompress.decompose.cp import cp_als, cp_to_tensor
    from tcompress.decompose.tucker import tucker_to_tensor
    from tcompress.methods import get

    shape = W.shape
    if kind == "cp":
        result = cp_als(W, cp_rank, seed=0)
        weights = own(result.weights)
        factors = [own(u) for u in result.factors]
        count = get("cp").params(shape, (cp_rank,))
        return Structured([weights, *factors], lambda: cp_to_tensor(weights, factors), count)
    tucker = get("tucker").decompose(W, ranks, n_iter=0, seed=0).tensor
    core = own(tucker.core)
    us = [own(u) for u in tucker.factors]
    projections = sum(d * r for d, r in zip(shape, ranks))
    if kind == "tucker":
        count = get("tucker").params(shape, ranks)
        return Structured([core, *us], lambda: tucker_to_tensor(core, us), count)
    if kind == "tucker-cp":
        rank = setting
        inner = cp_als(core.float(), rank, seed=0)
        weights = own(inner.weights)
        a = [own(x) for x in inner.factors]

        def rebuild() -> torch.Tensor:
            return cp_to_tensor(weights, [u @ x for u, x in zip(us, a)])

        return Structured([weights, *us, *a], rebuild, projections + rank * (1 + sum(ranks)))
    if kind == "block":
        mask = block_mask(ranks, setting)
        core = own(core * mask)
        return Structured(
            [core, *us], lambda: tucker_to_tensor(core * mask, us), int(mask.sum()) + projections
        )
    raise ValueError(kind)


def fit(structured: Structured, W: torch.Tensor, iterations: int) -> None:
    """Least squares of all parameters to W (float64 L-BFGS, strong Wolfe line search)."""
    target = W.double()
    norm = float(target.square().sum())
    for p in structured.params:
        p.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        structured.params,
        max_iter=iterations,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
    )

    def closure():
        optimizer.zero_grad()
        loss = (structured.rebuild() - target).square().sum() / norm
        loss.backward()
        return loss

    optimizer.step(closure)
    for p in structured.params:
        p.requires_grad_(False)


def tucker_cp_rank(ranks, budget: int, shape) -> int:
    projections = sum(d * r for d, r in zip(shape, ranks))
    return (budget - projections) // (1 + sum(ranks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=3.0)
    parser.add_argument("--fit", type=int, default=200, help="L-BFGS iterations.")
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--record", default="docs/records/core_structure.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from torch.utils.data import DataLoader

    from tcompress.conversion import SEARCH_IMAGES, _image_batches
    from tcompress.data import Materialized, make_dataset
    from tcompress.evaluation.run import pckh_of
    from tcompress.models import pretrained_path
    from tcompress.passes.rank_search import AgreementScorer
    from tcompress.source import read_source
    from tcompress.stacking import unstack_kernels
    from tcompress.train import recalibrate_batchnorm

    src = read_source(str(pretrained_path()))
    W = src.stacked()
    shape = tuple(W.shape)
    dense = src.module().eval()
    total = sum(p.numel() for p in dense.parameters())
    outside = total - W.numel()
    budget = math.floor(total / args.ratio) - outside
    cp_rank = budget // (1 + sum(shape))

    keys, n_grid = src.family.weight_keys(), len(src.family.grid)
    images = torch.cat(_image_batches("synthetic", 2 * SEARCH_IMAGES, 0))
    agreement = AgreementScorer(
        dense,
        keys,
        n_grid,
        images[:SEARCH_IMAGES].split(16),
        images[SEARCH_IMAGES:].split(16),
    )
    train = DataLoader(make_dataset("synthetic", "train", 256, 64, n=512), batch_size=16)
    train_images = [b["image"] for b in train]
    val = Materialized(make_dataset("synthetic", "val", 256, 64, n=args.val_samples))

    def pckh(W_hat: torch.Tensor) -> float:
        net = copy.deepcopy(dense)
        with torch.no_grad():
            for key, kernel in zip(keys, unstack_kernels(W_hat.float(), n_grid)):
                net.get_parameter(key).copy_(kernel)
        recalibrate_batchnorm(net, train_images)
        return float(pckh_of(net.eval(), val, 16).result().mean)

    def rate(W_hat: torch.Tensor) -> dict:
        W_hat = W_hat.detach()
        error = float((W_hat - W.double()).norm() / W.double().norm())
        return {
            "relative_error": error,
            "agreement": agreement(W_hat.float()),
            "pckh": pckh(W_hat),
        }

    record = {
        "settings": {
            "model": "tcompress/assets/hourglass-synthetic.pth",
            "shape": list(shape),
            "target_ratio": args.ratio,
            "budget_W": budget,
            "fit_iterations": args.fit,
            "val_samples": args.val_samples,
            "recalibrate": 512,
            "agreement_images": SEARCH_IMAGES,
        },
        "original_pckh": float(pckh_of(dense, val, 16).result().mean),
        "rows": [],
    }
    for name, kind, ranks, setting in CANDIDATES:
        if kind == "tucker-cp":
            setting = tucker_cp_rank(ranks, budget, shape)
        structured = start(kind, W, ranks, setting, cp_rank)
        row = {
            "name": name,
            "kind": kind,
            "ranks": list(ranks) if ranks else [cp_rank],
            "setting": setting,
            "params_W": structured.count,
            "ratio": total / (outside + structured.count),
        }
        with torch.no_grad():
            row["start"] = rate(structured.rebuild())
        began = time.perf_counter()
        fit(structured, W, args.fit)
        row["fit_seconds"] = time.perf_counter() - began
        with torch.no_grad():
            row["fitted"] = rate(structured.rebuild())
        print(
            f"{name}: {row['ratio']:.3f}x; start {row['start']}; fitted {row['fitted']}",
            flush=True,
        )
        record["rows"].append(row)
        write_json(args.record, record)


if __name__ == "__main__":
    main()
