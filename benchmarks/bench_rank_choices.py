"""How the ranks of each method other than the Tucker T-Net are chosen, and how each converts.

On the bundled model at each ratio, every choice the command line offers (the Tucker T-Net's are
in ``bench_rank_criteria.py``):

- layer-wise Tucker and Tai:
  - ``uniform``: ``tcompress convert --method M --ratio X``, one rank for every layer;
  - ``spectrum``: ``--per-layer``, every layer its own ranks on its kernel's spectrum (each
    layer's error relative to its norm);
  - ``data``: ``--per-layer --data synthetic``, on what each rank costs the BatchNorm-normalised
    output of its layer on 256 training images;
- the MPS and tensor-ring T-Nets:
  - ``bound``: ``--ratio X``, the bonds allocated on the TT-SVD error bound;
  - ``data``: ``--ratio X --data synthetic``, on what truncating each bond alone costs the block
    convolutions' normalised outputs on 256 training images.

For each: the whole-network ratio reached, the relative error of the kernels, the spread of the
ranks (over the layers for a layer-wise method), and the converted network's PCKh@0.5 on 500
images of the validation split after ``tcompress recalibrate`` on 512 training images.

    python benchmarks/bench_rank_choices.py                # docs/records/rank_choices.json

Runs are resumable: rows already in the record are kept unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import run_json as tcompress  # noqa: E402
from recipes import write_json  # noqa: E402

#: ``tcompress convert`` options of each choice, by the kind of method.
CHOICES = {
    "layerwise": {
        "uniform": [],
        "spectrum": ["--per-layer"],
        "data": ["--per-layer", "--data", "synthetic"],
    },
    "tnet": {"bound": [], "data": ["--data", "synthetic"]},
}


def spread(layer_ranks: dict | None, ranks: list[int]) -> list[dict]:
    """Smallest, mean and largest of each rank over the layers."""
    columns = list(zip(*layer_ranks.values())) if layer_ranks else [[r] for r in ranks]
    return [{"min": min(c), "mean": round(sum(c) / len(c), 2), "max": max(c)} for c in columns]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="2,3")
    parser.add_argument("--methods", default="layerwise-tucker,tai,mps,tr")
    parser.add_argument("--val-samples", type=int, default=500)
    parser.add_argument("--work", default="runs/rank_choices")
    parser.add_argument("--record", default="docs/records/rank_choices.json")
    parser.add_argument("--fresh", action="store_true", help="Ignore the rows already recorded.")
    args = parser.parse_args()

    from tcompress import methods
    from tcompress.models import pretrained_path

    os.makedirs(args.work, exist_ok=True)
    record = {"rows": []}
    if os.path.exists(args.record) and not args.fresh:
        record = json.loads(Path(args.record).read_text())
    record["settings"] = {
        "model": "bundled",
        "recalibrate": 512,
        "split": "val",
        "val_samples": args.val_samples,
        "data_images": 256,
    }
    done = {(r["method"], r["target"], r["choice"]) for r in record["rows"]}
    source = str(pretrained_path())
    for ratio in map(float, args.ratios.split(",")):
        for method in args.methods.split(","):
            options = CHOICES[methods.get(method).kind]
            for choice in options:
                if (method, ratio, choice) in done:
                    continue
                stem = f"{args.work}/{method}-{ratio:g}x-{choice}"
                summary = tcompress(
                    "convert", source, "--method", method, "--ratio", ratio,
                    *options[choice], "-o", f"{stem}.pt", "--force",
                )  # fmt: skip
                tcompress(
                    "recalibrate", f"{stem}.pt", "--data", "synthetic", "-n", 512,
                    "-o", f"{stem}-rc.pt", "--force",
                )  # fmt: skip
                scored = tcompress(
                    "evaluate", f"{stem}-rc.pt", "--data", "synthetic", "--split", "val",
                    "-n", args.val_samples,
                )  # fmt: skip
                row = {
                    "method": method,
                    "target": ratio,
                    "choice": choice,
                    "ratio": summary["compression_ratio"],
                    "relative_error": summary["relative_error"],
                    "ranks": spread(summary.get("layer_ranks"), summary["ranks"]),
                    "pckh": scored["pckh"]["mean"],
                }
                print(
                    f"{method} {ratio:g}x {choice}: {row['ratio']:.3f}x, error "
                    f"{row['relative_error']:.3f}, PCKh {row['pckh']:.1f}",
                    flush=True,
                )
                record["rows"].append(row)
                write_json(args.record, record)


if __name__ == "__main__":
    main()
