"""``tcompress demo``: the whole conversion on an embedded small hourglass, no files needed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from tcompress.cli import handle_errors, main


@main.command()
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the demo checkpoint and T-Nets here [default: a temporary directory].",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the demo hourglass.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors
def demo(output_dir, seed, as_json):
    """Build a small seeded hourglass, convert it with Tucker and MPS, and check the T-Nets.

    \b
    Example:
      tcompress demo
    """
    from rich.table import Table

    from tcompress.cli.render import (
        bench_table,
        print_json,
        print_summary,
        quiet_status,
        stderr,
        stdout,
    )
    from tcompress.demo import DEMO_CONFIG, run_demo, run_deployment

    with tempfile.TemporaryDirectory(prefix="tcompress-demo-") as tmp:
        out_dir = output_dir or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        status = quiet_status() if as_json else stderr().status("Converting", spinner="dots")
        with status:
            runs = run_demo(str(out_dir), seed=seed)
            status.update("Exporting to ONNX, validating and measuring in ONNX Runtime")
            deployment = run_deployment(str(out_dir), runs)
    if as_json:
        print_json(
            {
                "config": DEMO_CONFIG,
                "runs": [{"summary": r.summary, "output_error": r.output_error} for r in runs],
                "deployment": [r.to_dict() for r in deployment],
            }
        )
        return
    console = stdout()
    console.print(
        "[bold]Demo hourglass[/bold] StackedHourglass("
        + ", ".join(f"{k}={v}" for k, v in DEMO_CONFIG.items())
        + f"), seed {seed}, random weights"
    )
    for run in runs:
        console.rule(f"{run.method} --ranks {run.ranks_spec}")
        print_summary(console, run.summary)
    table = Table(
        title="T-Net outputs vs the original (eval mode, 2 random 128x128 inputs)",
        title_justify="left",
    )
    for col in ("method", "ranks", "ratio", "error of W", "reconstructed", "factorized"):
        table.add_column(col, justify="right" if col not in ("method", "ranks") else "left")
    for run in runs:
        s = run.summary
        table.add_row(
            s["method"],
            run.ranks_spec,
            f"{s['compression_ratio']:.2f}x",
            f"{s['relative_error']:.3g}",
            f"{run.output_error['reconstructed']:.2e}",
            f"{run.output_error['factorized']:.2e}",
        )
    console.print(table)
    console.print(
        "Output error is max |T-Net - original| / max |original| over every stack's "
        "heatmaps; at full rank it is float rounding. The demo's weights are random, so they "
        "have no low-rank structure to keep: trained networks lose far less at the same ranks."
    )
    console.print(
        bench_table(
            deployment,
            title="Deployment: ONNX exports (validated against "
            "PyTorch), ONNX Runtime on the CPU, batch 1, 128x128",
        )
    )
    console.print(
        "Ratios are to the original network's export (median of 10 interleaved "
        "rounds); MAC bound = its multiply-adds / the file's."
    )
    if output_dir:
        console.print(f"files kept in {output_dir}")
