"""Ranks of several tensors chosen on data or on the error bound, on a network of three widths.

A network of your own often has kernels of several shapes: ``--family`` then makes one tensor per
group of same-shape kernels and a ``--ratio`` allocates the ranks of every group at once, on the
sum of the groups' HOSVD / TT-SVD error bounds or, with ``--data``, on what each rank's
truncation costs every block convolution's normalised output, each group's costs weighted by its
layers. This benchmark trains a classifier whose three stages have widths 16, 32 and 64 (two
residual blocks of two 3x3 convolutions each: three groups of four kernels; the convolutions that
widen the network between stages stay dense), on the images of ``examples/custom_network.py``
(noisy stripes, checkerboards and blobs, 32x32, here with ``--noise`` more Gaussian noise so
that the task is not solved perfectly: about 90% top-1 at the default), then converts it at each
ratio with each method both ways and reports top-1 accuracy on held-out images:

- ``converted``: the kernels replaced, nothing else changed;
- ``recalibrated``: BatchNorm statistics re-estimated on 512 training images;
- ``finetuned``: then ``--steps`` steps of the example's plain loop (Adam at 1e-3, cosine), one
  run per seed (the seed draws the batches).

    python benchmarks/bench_group_ranks.py        # docs/records/group_ranks.json
    python benchmarks/bench_group_ranks.py --bound-weights   # and the bound weighted otherwise

The dense network is trained once (seed 0); every conversion starts from it, and the dense
network fine-tuned alike (the same steps from the same seeds) is the reference. Rows already in
the record (same settings, same dense network) are kept unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
from custom_network import Block, accuracy, make_images, params, train  # noqa: E402
from recipes import write_json  # noqa: E402

#: The factory tcompress builds the network from again, and the kernels it stacks: the pattern
#: groups them by shape into stage1, stage2 and stage3.
ARCH = "bench_group_ranks:build"
FAMILY = "stage{stage}.{block}.conv{conv}"
WIDTHS = (16, 32, 64)


class Net(nn.Module):
    """A strided stem to 16 channels, then three stages (widths 16, 32, 64, 2x max-pooling
    before the last two) of two residual blocks each; a dense 3x3 convolution widens the
    features on entering a stage; global average pooling and a linear classifier."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, WIDTHS[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(WIDTHS[0]),
            nn.ReLU(),
        )
        c_in = WIDTHS[0]
        for i, width in enumerate(WIDTHS, 1):
            if width != c_in:
                entry = nn.Sequential(
                    nn.Conv2d(c_in, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                )
                setattr(self, f"entry{i}", entry)
            setattr(self, f"stage{i}", nn.Sequential(Block(width), Block(width)))
            c_in = width
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem(x))
        x = self.stage2(self.entry2(F.max_pool2d(x, 2)))
        x = self.stage3(self.entry3(F.max_pool2d(x, 2)))
        return self.fc(x.mean((2, 3)))


def build() -> Net:
    return Net()


def noisy_images(n: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The example's images with Gaussian noise of standard deviation ``noise`` added."""
    images, labels = make_images(n, seed)
    g = torch.Generator().manual_seed(seed + 100)
    return images + noise * torch.randn(images.shape, generator=g), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="2,3,4")
    parser.add_argument("--methods", default="tucker,mps")
    parser.add_argument("--seeds", default="0,1,2", help="Fine-tuning seeds.")
    parser.add_argument("--train-steps", type=int, default=800, help="Training the dense network.")
    parser.add_argument("--steps", type=int, default=200, help="Fine-tuning each conversion.")
    parser.add_argument("--data-images", type=int, default=256, help="--data: unlabeled images.")
    parser.add_argument("--noise", type=float, default=3.0, help="Gaussian noise added.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--record", default=str(HERE.parent / "docs/records/group_ranks.json"))
    parser.add_argument(
        "--fresh", action="store_true", help="Run every row again (default: keep the record's)."
    )
    parser.add_argument(
        "--bound-weights",
        action="store_true",
        help="Also convert on the bound with each group weighted per kernel (the default), per "
        "output channel and not at all (converted and re-estimated only).",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    torch.manual_seed(0)
    train_images, train_labels = noisy_images(6000, 0, args.noise)
    test_images, test_labels = test = noisy_images(2000, 1, args.noise)
    dense = build()
    train(dense, train_images, train_labels, args.train_steps, lr=3e-3)
    dense_accuracy = accuracy(dense, test_images, test_labels)
    print(f"dense: {params(dense):,} parameters, accuracy {dense_accuracy:.1f}%")
    unlabeled = list(train_images[-args.data_images :].split(64))  # labels are not used
    seeds = [int(s) for s in args.seeds.split(",")]

    def finetuned(model: nn.Module) -> list[float]:
        """Accuracy after ``--steps`` steps from ``model``'s state, once per seed."""
        start = copy.deepcopy(model.state_dict())
        tuned = []
        for seed in seeds:
            model.load_state_dict(start)
            train(model, train_images, train_labels, args.steps, lr=1e-3, seed=seed)
            tuned.append(accuracy(model, test_images, test_labels))
        return tuned

    settings = {
        k: getattr(args, k) for k in ("train_steps", "steps", "data_images", "seeds", "noise")
    }
    kept, kept_seconds = [], 0.0
    if not args.fresh and Path(args.record).exists():
        old = json.loads(Path(args.record).read_text())
        if old["settings"] == settings and old["network"]["accuracy"] == dense_accuracy:
            kept, kept_seconds = old["rows"], old.get("seconds", 0.0)
    dense_tuned = finetuned(copy.deepcopy(dense))
    print(f"dense fine-tuned alike: {statistics.fmean(dense_tuned):.1f} {dense_tuned}")
    record = {
        "settings": settings,
        "network": {
            "widths": list(WIDTHS),
            "params": params(dense),
            "accuracy": dense_accuracy,
            "finetuned": dense_tuned,
            "finetuned_mean": statistics.fmean(dense_tuned),
            "test_images": len(test_labels),
        },
        "rows": [],
        "seconds": kept_seconds,
    }
    for ratio in (float(r) for r in args.ratios.split(",")):
        for method in args.methods.split(","):
            for criterion in ("bound", "data"):
                same = [
                    r
                    for r in kept
                    if (r["ratio"], r["method"], r["criterion"]) == (ratio, method, criterion)
                ]
                if same:
                    record["rows"].append(same[0])
                    continue
                data = unlabeled if criterion == "data" else None
                tnet, rated = converted(
                    dense,
                    method,
                    ratio,
                    test,
                    train_images,
                    data=data,
                    refine_samples=args.data_images,
                )
                row = {"ratio": ratio, "method": method, "criterion": criterion, **rated}
                tuned = finetuned(tnet)
                row["finetuned"] = tuned
                row["finetuned_mean"] = statistics.fmean(tuned)
                record["rows"].append(row)
                print(
                    f"{ratio:g}x {method} {criterion}: {row['achieved']:.2f}x, "
                    f"ranks {row['ranks']}, error {row['relative_error']:.3f}, converted "
                    f"{row['converted']:.1f}, recalibrated {row['recalibrated']:.1f}, "
                    f"fine-tuned {row['finetuned_mean']:.1f} {[round(t, 1) for t in tuned]}",
                    flush=True,
                )
                record["seconds"] = kept_seconds + time.perf_counter() - started
                write_json(args.record, record)
    if args.bound_weights:
        record["bound_weights"] = bound_weights(args, dense, test, train_images)
        write_json(args.record, record)
    print(f"wrote {args.record}")


#: How the bound's groups may be weighted: each group's squared error over its ||W_g||^2 times
#: its kernels (the kernels' squared relative errors added up: tcompress's choice), times its
#: kernels' output channels too (every output channel's, as a BatchNorm after each convolution
#: normalises them), or not at all (the squared error of W).
WEIGHTINGS = {
    "kernels": lambda base, Ws: base(Ws),
    "output channels": lambda base, Ws: [w * W.shape[-3] for w, W in zip(base(Ws), Ws)],
    "none": lambda base, Ws: [1.0] * len(Ws),
}


def converted(dense, method, ratio, test, train_images, **options) -> tuple[nn.Module, dict]:
    """``dense`` converted for ``ratio`` (``options``: ``convert``'s ``data=`` and
    ``refine_samples=``), BatchNorm then re-estimated on 512 training images; the T-Net, and its
    ratio, ranks, error of W and accuracy on ``test`` (images, labels) before and after."""
    import tcompress
    from tcompress.train import recalibrate_batchnorm

    tnet = tcompress.convert(
        copy.deepcopy(dense), method, arch=ARCH, family=FAMILY, ratio=ratio, **options
    )
    s = tnet.summary
    rated = {
        "achieved": s["compression_ratio"],
        "ranks": {g["name"]: g["ranks"] for g in s["groups"]},
        "relative_error": s["relative_error"],
        "converted": accuracy(tnet, *test),
    }
    recalibrate_batchnorm(tnet, train_images[:512].split(64))
    rated["recalibrated"] = accuracy(tnet, *test)
    return tnet, rated


def bound_weights(args, dense, test, train_images) -> list[dict]:
    """The bound's allocation under each of :data:`WEIGHTINGS`, swapped in for
    ``tcompress.methods.base.kernel_weights``; converted and BatchNorm re-estimated."""
    from tcompress.methods import base

    default = base.kernel_weights
    rows = []
    try:
        for name, weigh in WEIGHTINGS.items():
            base.kernel_weights = lambda Ws, weigh=weigh: weigh(default, Ws)
            for ratio in (float(r) for r in args.ratios.split(",")):
                for method in args.methods.split(","):
                    _, rated = converted(dense, method, ratio, test, train_images)
                    row = {"weights": name, "ratio": ratio, "method": method, **rated}
                    rows.append(row)
                    print(
                        f"bound weighted by {name}: {ratio:g}x {method} ranks {row['ranks']}, "
                        f"error {row['relative_error']:.3f}, converted {row['converted']:.1f}, "
                        f"recalibrated {row['recalibrated']:.1f}",
                        flush=True,
                    )
    finally:
        base.kernel_weights = default
    return rows


if __name__ == "__main__":
    main()
