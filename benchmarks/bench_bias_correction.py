"""What RMSprop's bias correction does to the first steps of a fine-tuning.

RMSprop's running average of squared gradients starts at zero, so without a correction its first
update is about ten times the learning rate in every coordinate. This runs a few steps of
fine-tuning of the bundled model (dense; batch 16, constant learning rate, fresh synthetic
training samples, seed 0) twice, with and without the correction (``TrainSettings
(bias_correction=...)``, ``tcompress finetune --no-bias-correction``), and scores PCKh@0.5 on
held-out synthetic images before and after each.

    python benchmarks/bench_bias_correction.py [--steps 5] [--lr 5e-4] [--val-samples 150] \\
        [--record docs/records/bias_correction.json]

Writes the record (``--record``) with every figure the README quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import tcompress  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tcompress.checkpoint import atomic_write  # noqa: E402
from tcompress.data import Materialized, SyntheticPose  # noqa: E402
from tcompress.models import pretrained  # noqa: E402
from tcompress.train import TrainSettings, evaluate_pck, fit  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--val-samples", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--record", type=Path, default=ROOT / "docs" / "records" / "bias_correction.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    val = Materialized(SyntheticPose(args.val_samples, 256, 64, split="val"))
    train = SyntheticPose(20_000, 256, 64, seed=0, split="train")
    record = {
        "settings": {
            "model": "bundled (tcompress.models.pretrained())",
            "steps": args.steps,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "schedule": "constant",
            "optimizer": "rmsprop",
            "val_samples": args.val_samples,
            "seed": 0,
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "before": evaluate_pck(pretrained().eval(), val)["mean"],
        "after": {},
    }
    for correct in (False, True):
        model = pretrained()
        settings = TrainSettings(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            milestones=(),  # a constant rate: the correction alone changes the step sizes
            bias_correction=correct,
        )
        torch.manual_seed(0)
        fit(model, train, settings, log_every=args.steps)
        name = "bias-corrected" if correct else "plain"
        record["after"][name] = evaluate_pck(model.eval(), val)["mean"]
        print(f"{name}: PCKh {record['before']:.1f} -> {record['after'][name]:.1f}", flush=True)
    record["seconds"] = time.perf_counter() - started
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(args.record, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
