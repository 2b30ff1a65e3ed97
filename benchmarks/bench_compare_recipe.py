"""The comparison that decides: every method fine-tuned with the README's 5-minute recipe.

``tcompress compare`` on the bundled model, every method given the recipe of
docs/records/finetune.json (860 steps, cosine from 1.5e-3, bf16, the first 3,000 training samples
cached, BatchNorm re-estimated on 512 images), the T-Nets' ranks chosen on the data
(``--rank-data``), scored on 1,000 images of the test split; the paired 95% interval of the
difference between the T-Net and each layer-wise method comes from the per-image hits.

The runs take hours, so they are split into parts (one ratio, some methods, some seeds), each a
``tcompress compare`` process of one thread whose report is kept in ``--parts`` as it lands;
``--merge`` joins every part there into the record and its figure
(:func:`tcompress.experiments.compare.merge_reports`: seeds of one method pool their hits).

    python benchmarks/bench_compare_recipe.py --ratio 3 --methods tucker,mps --seeds 0 --baseline
    python benchmarks/bench_compare_recipe.py --ratio 3 --methods layerwise-cp,layerwise-tucker,tai
    python benchmarks/bench_compare_recipe.py --merge   # docs/records/compare_recipe.json, .png
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

#: The recipe and scoring, as ``tcompress compare`` options.
RECIPE = (
    "--steps 860 --lr 1.5e-3 --schedule cosine --precision bf16 --train-samples 3000 --cache "
    "--recalibrate 512 --split test --val-samples 1000 --rank-data"
).split()


def part_name(ratio: str, methods: str, seeds: str) -> str:
    return f"r{ratio}-{methods.replace(',', '+')}-s{seeds.replace(',', '+')}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", help="One target ratio per part.")
    parser.add_argument("--methods", default="tucker,layerwise-cp,layerwise-tucker,tai,mps")
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--baseline", action="store_true", help="Also fine-tune the original (once per seed)."
    )
    parser.add_argument("--parts", default="docs/records/compare_recipe")
    parser.add_argument("--work", default="runs/compare_recipe")
    parser.add_argument("--merge", action="store_true", help="Join the parts; run nothing.")
    parser.add_argument("--record", default="docs/records/compare_recipe.json")
    parser.add_argument("--png", default="docs/compare_recipe.png")
    args = parser.parse_args()

    from tcompress.checkpoint import atomic_write
    from tcompress.cli.render import stdout
    from tcompress.cli.tables import comparison_table, difference_table
    from tcompress.experiments.compare import CompareReport, merge_reports, plot_comparison
    from tcompress.models import pretrained_path

    if args.merge:
        paths = sorted(glob.glob(os.path.join(args.parts, "*.json")))
        if not paths:
            sys.exit(f"no parts in {args.parts}")
        reports = [CompareReport.from_dict(json.loads(Path(p).read_text())) for p in paths]
        report = merge_reports(reports)
        text = json.dumps(dict(report.to_dict(), parts=[os.path.basename(p) for p in paths]))
        atomic_write(args.record, lambda tmp: Path(tmp).write_text(text + "\n"))
        plot_comparison(report, args.png)
        stdout().print(comparison_table(report.to_dict()))
        table = difference_table(report)
        if table is not None:
            stdout().print(table)
        print(f"wrote {args.record} and {args.png} from {len(paths)} part(s)")
        return
    if not args.ratio:
        parser.error("give --ratio (one part) or --merge")
    os.makedirs(args.parts, exist_ok=True)
    out = os.path.join(args.work, part_name(args.ratio, args.methods, args.seeds)[:-5])
    command = [
        sys.executable, "-m", "tcompress", "compare", str(pretrained_path()),
        "--ratios", args.ratio, "--methods", args.methods, "--seeds", args.seeds,
        *RECIPE, "-o", out, "--json", "--force",
    ]  # fmt: skip
    if not args.baseline:
        command.append("--no-baseline")
    # One thread: two parts side by side use two cores better than one part with two threads.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    # The record names the bundled model as the repository holds it, not this machine's path.
    root = Path(__file__).resolve().parents[1]
    report["checkpoint"] = os.path.relpath(report["checkpoint"], root)
    path = os.path.join(args.parts, part_name(args.ratio, args.methods, args.seeds))
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(report) + "\n"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
