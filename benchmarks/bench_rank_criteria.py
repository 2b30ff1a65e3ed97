"""Which criterion ranks candidate Tucker ranks in the order of their fine-tuned accuracy?

For each candidate rank set of the bundled model (all near one compression ratio), measure what
each criterion says of it before any training, then fine-tune it with the README's 5-minute
recipe (the command line a user runs) and score it on the validation and the test split:

- ``weight_error``: ||W - W_hat|| / ||W|| of the HOSVD (what the error-bound allocation sees);
- ``output_cost``: the summed per-mode truncation costs on the block convolutions' normalised
  outputs (:func:`tcompress.passes.data_aware.mode_costs`, the data-aware allocation's sum);
- ``output_error``: the same outputs' relative squared error of the HOSVD itself (not additive);
- ``refined_error``: that error after the data-aware L-BFGS fit (what the ranks can represent);
- ``heatmap_error``: the converted network's heatmaps (BatchNorm re-estimated) against the
  original's on held-out images, relative squared error, last stack;
- ``converted_pckh``: PCKh of the converted network, BatchNorm re-estimated, validation split;
- ``agreement``: what ``tcompress convert --ratio R --data`` searches on, without labels: how often
  the converted network, BatchNorm re-estimated on 64 training images, puts each joint where the
  original does on 64 others (:class:`tcompress.passes.rank_search.AgreementScorer`).

Then Spearman's rank correlation of each criterion with the fine-tuned validation PCKh.

    python benchmarks/bench_rank_criteria.py --original --auto 2,3
    python benchmarks/bench_rank_criteria.py --skip-finetune   # the criteria alone, minutes

``--auto 2,3`` also converts with ``tcompress convert --ratio R --data synthetic`` (the
data-aware rank search) and fine-tunes the result alike; ``--original`` fine-tunes the
uncompressed model alike (the reference of every gap).

Runs are resumable: candidates already in the output record (same ranks, same recipe) are kept
unless ``--fresh``; each finished candidate is written at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import FIVE_MINUTE_CLI as RECIPE  # noqa: E402
from recipes import run_json as tcompress  # noqa: E402

#: Rank sets near 3x: the error bound's choice, the data-aware allocation's, the hand choice
#: that fine-tuned best so far, and ones that lower another grid mode instead.
CANDIDATES = (
    "2,4,3,2,31,32,2,1",
    "2,4,3,2,31,32,1,2",
    "2,2,3,2,32,32,2,2",
    "1,4,3,2,32,32,2,2",
    "2,4,3,1,32,32,2,2",
)


#: How ``convert`` leaves a Tucker T-Net's factors (docs/balance.md), which the fine-tuned
#: figures depend on: a record of another form is not resumed.
FORM = "balanced"


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def criteria(ranks: list[int], W, checkpoint, stats, val, train, original_heatmaps) -> dict:
    """Every criterion of the module docstring for one rank set."""
    from torch.utils.data import DataLoader, Subset

    from tcompress.conversion import convert
    from tcompress.evaluation.run import pckh_of
    from tcompress.methods import get
    from tcompress.models.io import heatmaps_of
    from tcompress.passes.data_aware import output_error, refine_to_data
    from tcompress.train import recalibrate_batchnorm

    tucker = get("tucker")
    with torch.no_grad():
        decomposition = tucker.decompose(W, ranks, n_iter=0, seed=0)
        W_hat = decomposition.tensor.full()
        error, total = output_error(W_hat, W, stats)
        costs = tucker.data_costs(W, stats)
    refined = refine_to_data(decomposition.tensor, W, stats)
    model = convert(checkpoint, ranks=ranks)
    recalibrate_batchnorm(model, DataLoader(Subset(train, range(512)), batch_size=16))
    model.eval()
    with torch.no_grad():
        heatmaps = torch.cat([heatmaps_of(model, b["image"])[-1] for b in val_batches(val)])
    heatmap_error = float((heatmaps - original_heatmaps).square().sum())
    return {
        "ratio": model.summary["compression_ratio"],
        "weight_error": float(decomposition.relative_error),
        "output_cost": float(sum(c[r] for c, r in zip(costs, ranks))),
        "output_error": float(error / total),
        "refined_error": refined.error_after**2,
        "heatmap_error": heatmap_error / float(original_heatmaps.square().sum()),
        "converted_pckh": float(pckh_of(model, val, 16).result().mean),
    }


def val_batches(val):
    from torch.utils.data import DataLoader

    return DataLoader(val, batch_size=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", default=";".join(CANDIDATES), help="';'-separated")
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--criteria-samples", type=int, default=300)
    parser.add_argument("--stat-images", type=int, default=256)
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--original", action="store_true", help="Also fine-tune the original.")
    parser.add_argument(
        "--auto",
        default="",
        help="Comma-separated ratios: convert with --ratio R --data synthetic (the data-aware "
        "choice) and fine-tune the result alike.",
    )
    parser.add_argument("--fresh", action="store_true", help="Ignore what the record holds.")
    parser.add_argument("--work", default="runs/rank_criteria")
    parser.add_argument("-o", "--output", default="docs/records/rank_criteria.json")
    args = parser.parse_args()

    from tcompress.checkpoint import atomic_write
    from tcompress.conversion import _statistics
    from tcompress.data import Materialized, make_dataset
    from tcompress.models import pretrained_path
    from tcompress.models.io import heatmaps_of
    from tcompress.serialize import load
    from tcompress.source import read_source

    os.makedirs(args.work, exist_ok=True)
    record = {"recipe": " ".join(RECIPE), "form": FORM, "candidates": {}}
    if os.path.exists(args.output) and not args.fresh:
        with open(args.output) as f:
            old = json.load(f)
        if (old.get("recipe"), old.get("form")) == (record["recipe"], FORM):
            record = old

    def write() -> None:
        rows = [r for r in record["candidates"].values() if "val_pckh" in r]
        if len(rows) >= 3:
            record["spearman_with_val_pckh"] = {
                name: spearman([r[name] for r in rows], [r["val_pckh"] for r in rows])
                for name in ("weight_error", "output_cost", "output_error", "refined_error")
                + ("heatmap_error", "converted_pckh", "agreement")
                if all(name in r for r in rows)
            }
        text = json.dumps(record, indent=1)
        atomic_write(args.output, lambda tmp: open(tmp, "w").write(text + "\n"))

    bundled = str(pretrained_path())
    src = read_source(bundled)
    W = src.stacked()
    (stats,) = _statistics(src, W.device, "synthetic", args.stat_images, 0)  # one tensor
    val = Materialized(make_dataset("synthetic", "val", 256, 64, n=args.criteria_samples))
    train = make_dataset("synthetic", "train", 256, 64, n=512)
    original = load(bundled).eval()
    with torch.no_grad():
        reference = torch.cat([heatmaps_of(original, b["image"])[-1] for b in val_batches(val)])

    def pckh(path: str, split: str) -> float:
        out = tcompress(
            "evaluate", path, "--data", "synthetic", "--split", split, "-n", args.val_samples
        )
        return out["pckh"]["mean"]

    from tcompress.conversion import SEARCH_IMAGES, _image_batches
    from tcompress.methods import get
    from tcompress.passes.rank_search import AgreementScorer

    images = torch.cat(_image_batches("synthetic", 2 * SEARCH_IMAGES, 0))
    agreement = AgreementScorer(
        src.module(),
        src.family.weight_keys(),
        len(src.family.grid),
        images[:SEARCH_IMAGES].split(16),
        images[SEARCH_IMAGES:].split(16),
    )
    names = [c.strip() for c in args.candidates.split(";") if c.strip()]
    for name in names:
        row = record["candidates"].setdefault(name, {})
        ranks = [int(v) for v in name.split(",")]
        if "converted_pckh" not in row:
            print(f"{name}: criteria", flush=True)
            row.update(criteria(ranks, W, bundled, stats, val, train, reference))
            write()
        if "agreement" not in row:
            with torch.no_grad():
                W_hat = get("tucker").decompose(W, ranks, n_iter=0, seed=0).tensor.full()
            row["agreement"] = agreement(W_hat)
            write()
    if args.original and "original" not in record:
        names.append("original")
    for name in names:
        row = record["candidates"].setdefault(name, {}) if name != "original" else None
        if args.skip_finetune or (row is not None and "val_pckh" in row):
            continue
        if name == "original" and "original" in record:
            continue
        print(f"{name}: fine-tuning", flush=True)
        tag = name.replace(",", "-")
        source = bundled
        if name != "original":
            source = os.path.join(args.work, f"{tag}.pt")
            tcompress("convert", bundled, "--ranks", name, "-o", source, "--force")
        tuned = os.path.join(args.work, f"{tag}-ft.pt")
        started = time.perf_counter()
        tcompress("finetune", source, *RECIPE, "-o", tuned, "--force")
        minutes = (time.perf_counter() - started) / 60
        result = {"val_pckh": pckh(tuned, "val"), "test_pckh": pckh(tuned, "test")}
        result["minutes"] = minutes
        if name == "original":
            record["original"] = result
        else:
            row.update(result)
        write()
        print(f"{name}: {result}", flush=True)
    for ratio in [r for r in args.auto.split(",") if r]:
        auto = record.setdefault("auto", {})
        if "val_pckh" in auto.get(ratio, {}):
            continue
        print(f"--ratio {ratio} --data synthetic: converting", flush=True)
        source = os.path.join(args.work, f"auto-{ratio}x.pt")
        started = time.perf_counter()
        summary = tcompress(
            "convert", bundled, "--ratio", ratio, "--data", "synthetic", "-o", source, "--force"
        )
        row = {
            "ranks": summary["ranks"],
            "ratio": summary["compression_ratio"],
            "convert_minutes": (time.perf_counter() - started) / 60,
            "rank_search": summary["rank_search"],
        }
        tuned = os.path.join(args.work, f"auto-{ratio}x-ft.pt")
        started = time.perf_counter()
        tcompress("finetune", source, *RECIPE, "-o", tuned, "--force")
        row["minutes"] = (time.perf_counter() - started) / 60
        row.update(val_pckh=pckh(tuned, "val"), test_pckh=pckh(tuned, "test"))
        auto[ratio] = row
        write()
        print(f"--ratio {ratio}: {row['ranks']} {row['val_pckh']:.1f} / {row['test_pckh']:.1f}")
    write()
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
