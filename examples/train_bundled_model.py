"""Train the pretrained hourglass that ships with tcompress (``tcompress/assets``).

A 2-stack, depth-4 hourglass of 32 features with 2-convolution blocks, trained from seed 0 on the
procedural synthetic pose data (256 x 256 inputs, 64 x 64 heatmaps, a fresh sample at every
step: the data set draws new scenes every epoch) with RMSprop and a multi-step schedule, and
evaluated on the held-out synthetic split as it goes. On 2 CPU cores the default run takes
about an hour; run it in the background and keep the log:

    nohup python examples/train_bundled_model.py > train-bundled.log 2>&1 &

It writes the weights (a plain state dict) and a JSON record of the run (settings, loss curve,
PCKh curve) next to each other; ``--out`` picks the weights' path.

    python examples/train_bundled_model.py --quick --out runs/train-quick/hourglass.pth

``--quick`` is a smoke test (2 steps of 2 images, 4 held-out images) whose figures mean nothing;
it needs ``--out`` (it never replaces the bundled model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tcompress.checkpoint import atomic_write, save_torch
from tcompress.data import SyntheticPose
from tcompress.models import StackedHourglass
from tcompress.train.loop import TrainSettings, fit

CONFIG = dict(n_stacks=2, depth=4, block_depth=2, features=32, n_joints=16)
BUNDLED = "tcompress/assets/hourglass-synthetic.pth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=400)
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help=f"[default: {BUNDLED}]")
    parser.add_argument("--quick", action="store_true", help="a few steps and images (smoke test)")
    args = parser.parse_args()
    if args.quick:
        if args.out is None:
            parser.error("--quick needs --out (it must not replace the bundled model)")
        args.steps, args.batch_size, args.eval_every, args.eval_samples = 2, 2, 2, 4
        args.workers = 0
    args.out = args.out or BUNDLED
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.reconfigure(line_buffering=True)  # the log follows the run

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = StackedHourglass(**CONFIG)
    train = SyntheticPose(20_000, 256, 64, seed=args.seed, split="train")
    val = SyntheticPose(args.eval_samples, 256, 64, seed=args.seed, split="val")
    # The bundled model was trained before RMSprop's bias correction existed; without it the
    # run reproduces that file.
    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        bias_correction=False,
    )
    started = time.perf_counter()

    def log(event: dict) -> None:
        minutes = (time.perf_counter() - started) / 60
        if event["kind"] == "eval":
            print(
                f"[{minutes:6.1f} min] step {event['step']:5d}  PCKh {event['pckh']:.2f}",
                flush=True,
            )
        elif event["kind"] == "step" and event["step"] % 50 == 0:
            print(
                f"[{minutes:6.1f} min] step {event['step']:5d}  loss {event['loss']:.6f}  "
                f"lr {event['lr']:.2e}"
            )

    result = fit(
        model,
        train,
        settings,
        val_data=val,
        eval_every=args.eval_every,
        num_workers=args.workers,
        checkpoint=args.out + ".state",
        save_every=250,
        log_every=50,
        on_event=log,
    )
    model.eval()
    save_torch({k: v.detach().cpu() for k, v in model.state_dict().items()}, args.out)
    record = {
        "config": CONFIG,
        "image_size": 256,
        "heatmap_size": 64,
        "train": settings.to_dict(),
        "data": {"kind": "synthetic", "seed": args.seed, "val_samples": args.eval_samples},
        "result": result.to_dict(),
    }
    text = json.dumps(record, indent=1)
    atomic_write(args.out.rsplit(".", 1)[0] + ".json", lambda tmp: Path(tmp).write_text(text))
    print(
        f"done: {result.steps} steps in {result.seconds / 60:.1f} min, final PCKh "
        f"{result.evaluations[-1]['pckh']:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
