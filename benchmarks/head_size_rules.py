"""How much the head size decides PCKh: MPII's head boxes against the neck-to-head-top estimate.

Reads the ground truth of MPII's validation split from bearpaw/pytorch-pose's
``evaluation/data/detections_our_format.mat`` (not shipped with tcompress: give its path) and,
over the people whose neck and head top are both annotated,

- compares the estimate tcompress uses without head boxes (0.6 x sqrt(2) x the neck-to-head-top
  segment) with MPII's head size (0.6 x the head box diagonal): median and quartiles of the ratio;
- scores the same predictions, ground truth plus Gaussian noise whose scale is set so that MPII's
  rules give about 86%, with MPII's head sizes and with the estimate (same strict threshold, same
  joints), so that the difference is the head size alone.

Usage::

    python benchmarks/head_size_rules.py --mpii-mat detections_our_format.mat \
        [--target 86.4] [--seed 0] [--out docs/records/head_size_rules.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import tcompress  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from tcompress.checkpoint import atomic_write  # noqa: E402
from tcompress.data.skeleton import HEAD_TOP, UPPER_NECK, head_size  # noqa: E402
from tcompress.evaluation.mpii import official_pckh, read_mpii_mat  # noqa: E402


def noisy(joints: np.ndarray, head_sizes: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Ground truth plus isotropic Gaussian noise of ``scale`` head sizes."""
    rng = np.random.default_rng(seed)
    return joints + rng.standard_normal(joints.shape) * (scale * head_sizes)[:, None, None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpii-mat", required=True, type=Path)
    parser.add_argument("--target", type=float, default=86.4, help="PCKh by MPII's rules")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "records" / "head_size_rules.json"
    )
    args = parser.parse_args()

    truth = read_mpii_mat(args.mpii_mat)
    both = truth.labelled[:, UPPER_NECK] & truth.labelled[:, HEAD_TOP]
    truth = truth.rows(both)
    estimate = head_size(truth.joints)
    ratio = estimate / truth.head_sizes
    # The noise scale that gives the target PCKh by MPII's rules, by bisection.
    low, high = 0.0, 2.0
    for _ in range(40):
        mid = (low + high) / 2
        score = official_pckh(noisy(truth.joints, truth.head_sizes, mid, args.seed), truth).mean
        low, high = (mid, high) if score > args.target else (low, mid)
    preds = noisy(truth.joints, truth.head_sizes, (low + high) / 2, args.seed)
    official = official_pckh(preds, truth).mean
    estimated = official_pckh(preds, replace(truth, head_sizes=estimate)).mean
    record = {
        "people": int(both.sum()),
        "people_in_file": int(len(both)),
        "estimate_over_official": {
            "median": float(np.median(ratio)),
            "quartiles": [float(np.quantile(ratio, 0.25)), float(np.quantile(ratio, 0.75))],
        },
        "noise_head_sizes": (low + high) / 2,
        "seed": args.seed,
        "pckh_official_head_sizes": official,
        "pckh_estimated_head_sizes": estimated,
    }
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    print(
        f"{record['people']} of {record['people_in_file']} people with neck and head top: "
        f"estimate / official head size, median {record['estimate_over_official']['median']:.3f}; "
        f"the same predictions score {official:.1f} with MPII's head sizes and {estimated:.1f} "
        f"with the estimate"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
