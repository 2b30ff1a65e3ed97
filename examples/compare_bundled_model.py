"""The README's comparison: every method at four ratios on the bundled model, fine-tuned alike.

Runs ``tcompress compare`` as several processes, each with its share of the ratios and one
thread (small convolutions use two cores better as two single-threaded processes than as one
process with two threads), then merges their reports into one table, ``compare.json`` and
``compare.png``. Every process renders the same held-out images and draws the same bootstrap
resamples, so the merged intervals are still paired.

    python examples/compare_bundled_model.py -o runs/compare
    python examples/compare_bundled_model.py -o runs/compare --record docs/records/compare.json \
        --png docs/compare.png --force  # the README's record and figure
    python examples/compare_bundled_model.py --plot-only --record docs/records/compare.json \
        --png docs/compare.png --force  # redraw the figure from the record, nothing run
    python examples/compare_bundled_model.py --quick -o runs/compare-quick  # a tiny run, seconds

The settings of the README's table are the defaults here; ``--quick`` is a smoke test (two
methods at one ratio, one step, 64x64 images, a handful of images) whose figures mean nothing.
The folder is made if missing; files already in it (the merged record and figure, each process's
log and folder) are refused before anything runs unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


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
    parser.add_argument("--record", default=None, help="[default: OUTPUT_DIR/compare.json]")
    parser.add_argument("--png", default=None, help="[default: OUTPUT_DIR/compare.png]")
    parser.add_argument(
        "--plot-only", action="store_true", help="draw --png from the --record, run nothing"
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run (a smoke test)")
    parser.add_argument("--force", action="store_true", help="Overwrite the files already there.")
    args = parser.parse_args()
    extra = []  # options of tcompress compare that only --quick sets
    if args.quick:
        args.ratios, args.methods, args.steps, args.batch_size = "2", "tucker,trimmed", 1, 2
        args.seeds, args.val_samples, args.recalibrate, args.processes = "0", 4, 2, 1
        extra = ["--image-size", "64", "--bootstrap", "50", "--onnx-repeats", "1"]

    from tcompress.checkpoint import atomic_write, check_new_files
    from tcompress.cli.render import stdout
    from tcompress.cli.tables import comparison_table
    from tcompress.errors import OutputError
    from tcompress.experiments.compare import CompareReport, plot_comparison
    from tcompress.models import pretrained_path

    json_path = args.record or os.path.join(args.output_dir, "compare.json")
    png_path = args.png or os.path.join(args.output_dir, "compare.png")
    if args.plot_only:
        try:
            with open(json_path) as f:
                report = CompareReport.from_dict(json.load(f))
            plot_comparison(report, png_path, force=args.force)
        except (OSError, OutputError) as e:
            sys.exit(f"Error: {e}")
        print(f"wrote {png_path} from {json_path}")
        return
    checkpoint = args.checkpoint or str(pretrained_path())
    ratios = args.ratios.split(",")
    shares = [ratios[i :: args.processes] for i in range(args.processes)]
    shares = [share for share in shares if share]
    logs = [os.path.join(args.output_dir, f"part{i}.log") for i in range(len(shares))]
    try:  # fail fast; each process checks its own folder, and every file is checked again later
        check_new_files([json_path, png_path, *logs], force=args.force)
    except OutputError as e:
        sys.exit(f"Error: {e.for_command()}")
    os.makedirs(args.output_dir, exist_ok=True)
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
            "-o", out, "--json", *extra,
        ]  # fmt: skip
        if i:
            command.append("--no-baseline")  # the first process fine-tunes the original
        if args.force:
            command.append("--force")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        # A log grows as its process runs, so it is not written atomically; "x" refuses one that
        # appeared since the check above.
        log = open(logs[i], "w" if args.force else "x")
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
    text = json.dumps(report.to_dict(), indent=1)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text), force=args.force)
    plot_comparison(report, png_path, force=args.force)
    stdout().print(comparison_table(report.to_dict()))
    print(f"{merged['seconds'] / 60:.1f} min; wrote {json_path} and {png_path}")


if __name__ == "__main__":
    main()
