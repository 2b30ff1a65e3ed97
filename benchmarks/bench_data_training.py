"""Fine-tuning speed from MPII-style JPEG files against the same samples served from memory.

The data set is ``bench_data.py``'s: generated photo-like 1280 x 720 JPEG files with 8 people
each. ``tcompress finetune`` runs on the bundled model (a 2-stack hourglass) in bf16 with batch
16, once reading the files with ``--workers`` processes and once from ``--cache`` (the samples
decoded once, then served from memory), at 128 x 128 and 256 x 256 inputs. The rate is the median
of the logged windows (images per second of the training loop, the cache's filling not
included); the ratio file / memory says how much of the step time the files cost.

Usage::

    python benchmarks/bench_data_training.py [--images 60] [--steps 60] [--workers 2] \
        [--out docs/records/data_training.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import tcompress  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from bench_data import make_data  # noqa: E402

from tcompress.checkpoint import atomic_write  # noqa: E402
from tcompress.models import pretrained  # noqa: E402


def finetune(model: Path, data: Path, size: int, steps: int, extra: list[str], out: Path) -> float:
    """Median images per second of the logged windows of one ``tcompress finetune`` run."""
    command = [
        sys.executable, "-m", "tcompress", "finetune", str(model), "--data", str(data),
        "--image-size", str(size), "--precision", "bf16", "--batch-size", "16",
        "--steps", str(steps), "--eval-samples", "8", "-o", str(out), "--force", "--json", *extra,
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    history = json.loads(run.stdout)["history"]
    return statistics.median(entry["images_per_s"] for entry in history[1:] or history)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "records" / "data_training.json"
    )
    args = parser.parse_args()
    record = {"images": args.images, "people": 8 * args.images, "steps": args.steps}
    record.update(workers=args.workers, threads=os.environ.get("OMP_NUM_THREADS"), runs={})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_data(tmp, args.images, seed=0)
        model = tmp / "bundled.pth"
        torch.save(pretrained().state_dict(), model)
        for size in (128, 256):
            workers = ["--workers", str(args.workers)]
            files = finetune(model, tmp / "jpeg", size, args.steps, workers, tmp / "a.pt")
            cache = ["--train-samples", str(record["people"]), "--cache", *workers]
            memory = finetune(model, tmp / "jpeg", size, args.steps, cache, tmp / "b.pt")
            record["runs"][str(size)] = {
                "files_images_per_s": files,
                "memory_images_per_s": memory,
                "files_over_memory": files / memory,
            }
            print(
                f"{size} x {size}: {files:.0f} images/s from the JPEG files, {memory:.0f} from "
                f"memory ({files / memory:.2f}x)"
            )
    atomic_write(args.out, lambda t: Path(t).write_text(json.dumps(record, indent=1) + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
