"""The README's comparison: every method at four ratios on the bundled model, fine-tuned alike.

Runs ``tcompress compare`` as several processes, each with its share of the ratios and one
thread (small convolutions use two cores better as two single-threaded processes than as one
process with two threads), then merges their reports into one table, ``compare.json`` and
``compare.png``. Every process renders the same held-out images and draws the same bootstrap
resamples, so the merged intervals are still paired.

    python examples/compare_bundled_model.py --steps 30 --batch-size 8 -o runs/compare

The settings of the README's table are the defaults here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", default="1.5,2,3.7,5")
    parser.add_argument("--methods", default="tucker,mps,layerwise-tucker,layerwise-cp,tai,trimmed")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--val-samples", type=int, default=200)
    parser.add_argument("--recalibrate", type=int, default=128)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--checkpoint", default=None, help="[default: the bundled model]")
    parser.add_argument("-o", "--output-dir", default="runs/compare")
    args = parser.parse_args()

    from tcompress.cli.compare import comparison_table
    from tcompress.cli.render import stdout
    from tcompress.experiments.compare import CompareReport, plot_comparison
    from tcompress.models import pretrained_path

    checkpoint = args.checkpoint or str(pretrained_path())
    ratios = args.ratios.split(",")
    shares = [ratios[i :: args.processes] for i in range(args.processes)]
    shares = [share for share in shares if share]
    started = time.perf_counter()
    runs = []
    for i, share in enumerate(shares):
        out = os.path.join(args.output_dir, f"part{i}")
        command = [
            sys.executable, "-m", "tcompress", "compare", checkpoint,
            "--ratios", ",".join(share), "--methods", args.methods,
            "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--seeds", args.seeds,
            "--val-samples", str(args.val_samples), "--recalibrate", str(args.recalibrate),
            "-o", out, "--json",
        ]  # fmt: skip
        if i:
            command.append("--no-baseline")  # the first process fine-tunes the original
        env = dict(os.environ, OMP_NUM_THREADS="1")
        log = open(os.path.join(args.output_dir, f"part{i}.log"), "w")
        runs.append((subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env), log))
    reports = []
    for process, log in runs:
        out, _ = process.communicate()
        log.close()
        if process.returncode:
            sys.exit(f"a compare process failed; see {log.name}")
        reports.append(json.loads(out))
    merged = dict(reports[0])
    merged["rows"] = [row for report in reports for row in report["rows"]]
    merged["settings"] = dict(merged["settings"], ratios=[float(r) for r in ratios])
    merged["seconds"] = time.perf_counter() - started
    report = CompareReport.from_dict(merged)
    with open(os.path.join(args.output_dir, "compare.json"), "w") as f:
        json.dump(report.to_dict(), f, indent=1)
    plot_comparison(report, os.path.join(args.output_dir, "compare.png"))
    stdout().print(comparison_table(report.to_dict()))
    print(f"{merged['seconds'] / 60:.1f} min; wrote {args.output_dir}/compare.json and .png")


if __name__ == "__main__":
    main()
