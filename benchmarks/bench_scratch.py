"""A T-Net trained from scratch against one converted from a trained network, at the same ratio
and the same total number of training steps.

Three runs of one small configuration on the synthetic data, with the command line a user would
run, every training with the same recipe (``tcompress train``'s loss and RMSprop, the learning
rate multiplied by 0.1 at 60% and 85% of the steps, the same cached training samples):

- (a) ``tcompress train --method M --ratio X``: a T-Net trained from scratch for N steps;
- (b) ``tcompress train`` for N - K steps, ``tcompress convert --method M --ratio X``, then
  ``tcompress finetune --recalibrate 512`` for K steps (cosine from the same learning rate);
- (c) ``tcompress train`` for N steps: the uncompressed network, as the reference.

Each is scored with ``tcompress evaluate --split val`` (PCKh@0.5 on held-out synthetic images).
With ``--variants`` (``--method tucker``), more runs of N steps (``variants`` in the record):
the T-Net from other starts, trained alike (the same random W with orthonormal factors and a
core of std * sqrt(prod D / R); the truncation, HOSVD, of the dense init's W at the same
ranks); an MPS T-Net from scratch (``--method mps --ratio X``); and (a) and (c) again at twice
the learning rate.

Before them, in a few seconds, the initialisation itself (``init`` in the record): for every T-Net
method at the ratio, the spread of the rebuilt block kernels against the dense init's (all of
them, and the smallest and largest per kernel), and how far five RMSprop steps of the training
recipe move the kernels (median over kernels of ||K_5 - K_0|| / ||K_0||, on one batch of 8
images), beside the dense network's and beside the truncation of the dense init's W at the
Tucker ranks and beside the same random W with orthonormal factors (the starts the
initialisation replaces).

    python benchmarks/bench_scratch.py --steps 1500 --finetune-steps 300 --ratio 3 \\
        --variants --record docs/records/scratch.json

Writes the record (``--record``) with every figure ``docs/scratch.md`` quotes; the files go to
``--out``. Minutes are wall-clock times of each command on this machine (shared with other jobs
when the record was made: not a speed figure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
from recipes import timed_json as tcompress
from recipes import write_text


def kernels(model) -> torch.Tensor:
    """The block kernels of a T-Net (rebuilt) or of a dense hourglass, one row per kernel."""
    from tcompress.family import layout_family

    if hasattr(model, "full_tensor"):
        W = model.full_tensor().detach()
        return W.reshape(math.prod(W.shape[: model.n_grid]), -1)
    names = layout_family(model).names
    return torch.stack([model.get_submodule(n).weight.detach().flatten() for n in names])


def moved(model, images, targets, lr: float) -> float:
    """Median over block kernels of ||K_5 - K_0|| / ||K_0|| after five steps of RMSprop (the
    training recipe's, bias-corrected) on one batch."""
    from tcompress.train import TrainSettings
    from tcompress.train.loop import heatmap_loss, learning_rate_factor, make_optimizer

    settings = TrainSettings(steps=1000, lr=lr)
    optimizer = make_optimizer(list(model.parameters()), settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(settings))
    model.train()
    before = kernels(model)
    for _ in range(5):
        loss = heatmap_loss(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return float(((kernels(model) - before).norm(dim=1) / before.norm(dim=1)).median())


def scale_in_core(tnet):
    """A Tucker T-Net's W unchanged, its factors made orthonormal (U_k / sqrt(D_k / R_k)) and
    its core scaled by prod sqrt(D_k / R_k) to make up for it; in place."""
    with torch.no_grad():
        for u in tnet.tensor.factors:
            d, r = u.shape
            u.div_(math.sqrt(d / r))
            tnet.tensor.core.mul_(math.sqrt(d / r))
    return tnet


def truncated(args, config: dict, ranks):
    """The HOSVD of the dense init's W (the network ``tcompress train`` starts from) at
    ``ranks``: a T-Net whose kernels are the truncation of random ones."""
    import tcompress
    from tcompress.models import StackedHourglass

    torch.manual_seed(args.seed)
    return tcompress.convert(StackedHourglass(**config), "tucker", ranks).train()


def init_check(args, config: dict) -> dict:
    """The rebuilt kernels' spread at the start and how fast the first steps move them."""
    from tcompress import methods
    from tcompress.data import SyntheticPose
    from tcompress.models import StackedHourglass
    from tcompress.scratch import dense_kernel_std, random_tnet

    torch.manual_seed(args.seed)
    data = SyntheticPose(8, args.image_size, args.image_size // 4, seed=args.seed, split="train")
    images = torch.stack([data[i]["image"] for i in range(8)])
    targets = torch.stack([data[i]["heatmaps"] for i in range(8)])

    def dense():
        torch.manual_seed(args.seed)
        return StackedHourglass(**config)

    def spread(model) -> dict:
        rows = kernels(model)
        target = dense_kernel_std(rows.shape[1] // args.features)
        per = rows.std(dim=1) / target
        return {
            "std_ratio": float(rows.std() / target),
            "min_kernel_std_ratio": float(per.min()),
            "max_kernel_std_ratio": float(per.max()),
        }

    out = {"dense": {**spread(dense()), "moved": moved(dense(), images, targets, args.lr)}}
    for name in methods.names(methods.TNET):
        tnet = random_tnet(config, name, ratio=args.ratio, seed=args.seed)
        out[name] = {
            "ranks": list(tnet.ranks),
            "compression_ratio": tnet.summary["compression_ratio"],
            **spread(tnet),
            "moved": moved(tnet, images, targets, args.lr),
        }
    starts = {
        "tucker, orthonormal factors": scale_in_core(
            random_tnet(config, "tucker", ratio=args.ratio, seed=args.seed)
        ),
        "tucker, truncated dense init": truncated(args, config, out["tucker"]["ranks"]),
    }
    for name, tnet in starts.items():
        out[name] = {
            "ranks": out["tucker"]["ranks"],
            **spread(tnet),
            "moved": moved(tnet, images, targets, args.lr),
        }
    for name, row in out.items():
        print(
            f"init {name}: std {row['std_ratio']:.3f}x the dense init's (per kernel "
            f"{row['min_kernel_std_ratio']:.3f} to {row['max_kernel_std_ratio']:.3f}); five steps "
            f"move the kernels {100 * row['moved']:.1f}%",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="N: every run's total steps")
    parser.add_argument(
        "--finetune-steps", type=int, default=300, help="K: the converted T-Net's fine-tuning"
    )
    parser.add_argument("--method", default="tucker")
    parser.add_argument("--ratio", type=float, default=3.0)
    parser.add_argument("--stacks", type=int, default=1)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--block-depth", type=int, default=2)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--recalibrate", type=int, default=512)
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/scratch")
    parser.add_argument(
        "--variants", action="store_true", help="also train the other starts (Tucker)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the runs an interrupted invocation finished (their files in --out)",
    )
    parser.add_argument("--record", default=None)
    args = parser.parse_args()
    if not 0 < args.finetune_steps < args.steps:
        parser.error(f"--finetune-steps must be in 1..{args.steps - 1}")
    if args.variants and args.method != "tucker":
        parser.error("--variants compares Tucker starts; give --method tucker")

    os.makedirs(args.out, exist_ok=True)
    shape = [
        *("--stacks", args.stacks, "--depth", args.depth, "--block-depth", args.block_depth),
        *("--features", args.features),
    ]
    common = [
        *("--data", "synthetic", "--image-size", args.image_size, "--lr", args.lr),
        *("--batch-size", args.batch_size, "--train-samples", args.train_samples, "--cache"),
        *("--eval-samples", 8, "--seed", args.seed),
    ]
    tnet_options = ["--method", args.method, "--ratio", args.ratio]

    def path(name: str) -> str:
        return os.path.join(args.out, name)

    def kept(name: str, run) -> tuple[dict, float]:
        """``run()``'s (output, seconds), which made the file ``name``; with ``--reuse``, those
        of an earlier run that made it (kept beside it as ``name.json``)."""
        from tcompress.checkpoint import atomic_write

        done = path(name + ".json")
        if args.reuse and os.path.exists(done) and os.path.exists(path(name)):
            with open(done) as f:
                saved = json.load(f)
            return saved["output"], saved["seconds"]
        output, seconds = run()
        text = json.dumps({"output": output, "seconds": seconds})
        atomic_write(done, lambda tmp: write_text(tmp, text))
        return output, seconds

    def pckh(model: str) -> float:
        out, _ = tcompress(
            "evaluate", model, "--split", "val", "-n", args.val_samples,
            "--image-size", args.image_size,
        )  # fmt: skip
        return out["pckh"]["mean"]

    def describe(model: str) -> dict:
        info, _ = tcompress("info", model)
        summary = info.get("summary") or {}
        return {
            "ranks": info.get("ranks"),
            "params": info["params"],
            "compression_ratio": summary.get("compression_ratio", 1.0),
        }

    def train(name: str, steps: int, extra: list) -> dict:
        out = path(name)
        done, seconds = kept(
            name,
            lambda: tcompress(
                "train", *shape, *common, "--steps", steps, *extra, "-o", out, "--force"
            ),
        )
        row = {"steps": steps, "final_loss": done["final_loss"], "minutes": seconds / 60}
        print(f"{name}: {steps} steps in {seconds / 60:.1f} min", flush=True)
        return {**row, **describe(out), "pckh": pckh(out)}

    config = dict(
        n_stacks=args.stacks, depth=args.depth, block_depth=args.block_depth,
        features=args.features, n_joints=16,
    )  # fmt: skip
    # What ``tcompress train`` does with ``common``, as finetune()'s keywords (for the variants,
    # whose starts the command line cannot make).
    recipe = dict(
        steps=args.steps, lr=args.lr, schedule="step", batch_size=args.batch_size,
        image_size=args.image_size, train_samples=args.train_samples, cache=True,
        eval_samples=8, seed=args.seed,
    )  # fmt: skip
    from tcompress.scratch import random_tnet
    from tcompress.train import finetune

    started = time.perf_counter()
    record = {"settings": vars(args), "init": init_check(args, config), "runs": {}}
    runs = record["runs"]
    runs["scratch"] = train("scratch.pt", args.steps, tnet_options)
    first = args.steps - args.finetune_steps
    runs["converted"] = train(f"dense-{first}.pth", first, [])
    converted = path("converted.pt")
    summary, seconds = kept(
        "converted.pt",
        lambda: tcompress(
            "convert", path(f"dense-{first}.pth"), *tnet_options, "-o", converted, "--force"
        ),
    )
    runs["converted"].update(
        dense_pckh=runs["converted"]["pckh"],
        converted_pckh=pckh(converted),
        relative_error=summary["relative_error"],
        convert_minutes=seconds / 60,
    )
    tuned = path("converted-ft.pt")
    done, seconds = kept("converted-ft.pt", lambda: tcompress(
        "finetune", converted, *common, "--steps", args.finetune_steps,
        "--schedule", "cosine", "--recalibrate", args.recalibrate, "-o", tuned, "--force",
    ))  # fmt: skip
    runs["converted"].update(
        finetune_steps=args.finetune_steps,
        finetune_final_loss=done["final_loss"],
        finetune_minutes=seconds / 60,
        **describe(tuned),
        pckh=pckh(tuned),
    )
    runs["dense"] = train(f"dense-{args.steps}.pth", args.steps, [])
    if args.variants:
        record["variants"] = variants = {}
        ranks = runs["scratch"]["ranks"]
        starts = {
            "orthonormal factors": lambda: scale_in_core(
                random_tnet(config, "tucker", ranks, seed=args.seed)
            ),
            "truncated dense init": lambda: truncated(args, config, ranks),
        }

        def trained(start) -> tuple[dict, float]:
            began = time.perf_counter()
            done = finetune(start(), "synthetic", **recipe, output=out, force=True)
            return {"final_loss": done.training.final_loss}, time.perf_counter() - began

        for name, start in starts.items():
            file = name.replace(" ", "-") + ".pt"
            out = path(file)
            done, seconds = kept(file, lambda start=start: trained(start))
            variants[name] = {
                "steps": args.steps,
                "final_loss": done["final_loss"],
                "minutes": seconds / 60,
                **describe(out),
                "pckh": pckh(out),
            }
            print(f"{name}: {args.steps} steps in {variants[name]['minutes']:.1f} min", flush=True)
        mps_options = ["--method", "mps", "--ratio", args.ratio]
        variants["mps"] = train("scratch-mps.pt", args.steps, mps_options)
        faster = ["--lr", 2 * args.lr]
        variants["lr x2"] = train("scratch-lr2.pt", args.steps, [*tnet_options, *faster])
        variants["dense, lr x2"] = train(f"dense-{args.steps}-lr2.pth", args.steps, faster)
    record["minutes"] = (time.perf_counter() - started) / 60
    for name, run in [*runs.items(), *record.get("variants", {}).items()]:
        print(
            f"{name}: {run['compression_ratio']:.2f}x, {run['params']:,} parameters, "
            f"PCKh@0.5 {run['pckh']:.1f}"
        )
    if args.record:
        from tcompress.checkpoint import atomic_write

        text = json.dumps(record, indent=2)
        atomic_write(args.record, lambda tmp: write_text(tmp, text))


if __name__ == "__main__":
    main()
