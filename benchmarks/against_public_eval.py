"""tcompress's MPII evaluation against bearpaw/pytorch-pose's own ``evaluation/eval_PCKh.py``.

Both score the same predictions on the ground truth of that repository's
``evaluation/data/detections_our_format.mat`` (the 2,958-person validation split): the ground
truth plus Gaussian noise of ``--noise`` head sizes, with every ``--drop``-th person's left hip
unpredicted (a far-away point, a certain miss). The public script runs unchanged in a subprocess
of a checkout you give (its imports of scikit-image and of its plotting helper, used only for
debugging pictures, are stubbed); its printed groups and Mean are compared with tcompress's to
the two decimals it prints.

Usage::

    python benchmarks/against_public_eval.py --pytorch-pose PATH/TO/pytorch-pose \
        [--noise 0.25] [--drop 7] [--seed 1] [--out docs/records/against_public_eval.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import tcompress  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from tcompress.checkpoint import atomic_write  # noqa: E402
from tcompress.data.skeleton import L_HIP  # noqa: E402
from tcompress.evaluation.mpii import (  # noqa: E402
    official_pckh,  # noqa: E402
    read_mpii_mat,
    write_preds_mat,
)

GROUPS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")


def public_scores(checkout: Path, preds: Path) -> dict[str, float]:
    """Run the public script on ``preds`` from ``checkout``; its printed figures."""
    with tempfile.TemporaryDirectory() as stubs:
        stubs = Path(stubs)
        (stubs / "skimage").mkdir()
        (stubs / "skimage" / "__init__.py").write_text("")
        (stubs / "skimage" / "io.py").write_text("def imread(*args, **kwargs):\n    pass\n")
        (stubs / "utils.py").write_text("def visualize(*args, **kwargs):\n    pass\n")
        run = subprocess.run(
            [sys.executable, "evaluation/eval_PCKh.py", "-r", str(preds)],
            cwd=checkout,
            env={"PYTHONPATH": str(stubs), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
    values = [float(v) for v in run.stdout.strip().splitlines()[-1].split()]
    return dict(zip((*GROUPS, "Mean"), values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pytorch-pose", required=True, type=Path)
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--drop", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "records" / "against_public_eval.json"
    )
    args = parser.parse_args()

    truth = read_mpii_mat(args.pytorch_pose / "evaluation" / "data" / "detections_our_format.mat")
    rng = np.random.default_rng(args.seed)
    noise = rng.standard_normal(truth.joints.shape) * (args.noise * truth.head_sizes)[:, None, None]
    preds = truth.joints + noise
    preds[:: args.drop, L_HIP] = -1e6
    result = official_pckh(preds, truth)
    ours = {**{g: result.groups[g] for g in GROUPS}, "Mean": result.mean}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preds.mat"
        write_preds_mat(path, preds)
        theirs = public_scores(args.pytorch_pose.resolve(), path)
    worst = max(abs(round(ours[k], 2) - theirs[k]) for k in theirs)
    record = {"people": len(preds), "noise_head_sizes": args.noise, "drop_every": args.drop}
    record.update(seed=args.seed, tcompress=ours, public=theirs, worst_difference=worst)
    atomic_write(args.out, lambda t: Path(t).write_text(json.dumps(record, indent=1) + "\n"))
    for name, values in (("tcompress", ours), ("eval_PCKh.py", theirs)):
        print(f"{name:>12}: " + "  ".join(f"{k} {v:.2f}" for k, v in values.items()))
    print(f"worst difference at two decimals: {worst:.2f}")
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
