"""``tcompress analyze``: per-mode spectra of W and a one-mode-at-a-time compression sweep."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import handle_errors, main


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--data",
    default=None,
    help="Also evaluate PCKh@0.5 of every sweep point before fine-tuning: 'synthetic' or an "
    "MPII-style set.",
)
@click.option("--val-samples", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--image-size", type=click.IntRange(min=16), default=256, show_default=True)
@click.option(
    "--points",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="About how many ranks of a large mode to sweep (small modes: every rank).",
)
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where analysis.json and analysis.png go [default: CHECKPOINT's name + .analysis].",
)
@click.option("--force", is_flag=True, help="Overwrite the files already in --output-dir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors
def analyze(checkpoint, data, val_samples, image_size, points, output_dir, force, as_json):
    """Where is W redundant? The spectrum of every mode (energy kept against rank) and a sweep
    that compresses one mode at a time (Tucker), with the whole-network compression ratio and
    the relative error of W, and with --data the accuracy before fine-tuning.

    \b
    Examples:
      tcompress analyze hg.pth
      tcompress analyze hg.pth --data synthetic --val-samples 200 -o analysis/
    """
    from tcompress.cli.render import (
        check_record_files,
        print_json,
        print_written,
        quiet_status,
        stderr,
        stdout,
        write_record,
    )
    from tcompress.experiments.analysis import analyze as run_analysis
    from tcompress.experiments.analysis import plot_analysis

    out_dir = output_dir or checkpoint.with_name(checkpoint.name + ".analysis")
    check_record_files(out_dir, "analysis", force)
    status = quiet_status() if as_json else stderr().status("Analyzing", spinner="dots")
    with status:
        report = run_analysis(
            checkpoint,
            data=data,
            val_samples=val_samples,
            image_size=image_size,
            points=points,
            progress=status.update,
        )
    json_path, figure = write_record(
        out_dir,
        "analysis",
        report.to_dict(),
        lambda path, force: plot_analysis(report, path, force=force),
        force=force,
    )
    if as_json:
        print_json(dict(report.to_dict(), json=str(json_path), png=figure and str(figure)))
        return
    console = stdout()
    console.print(spectra_table(report))
    console.print(sweep_table(report))
    if report.original_pckh is not None:
        console.print(f"original PCKh@0.5: {report.original_pckh:.1f}%")
    print_written(console, json_path, figure)


def spectra_table(report):
    """Per mode: the ranks keeping 90% and 99% of the energy, the energy at 1/4 and 1/2 size."""
    from rich.table import Table

    spectra = Table(title="Energy of W kept per mode (fraction of ||W||^2)", title_justify="left")
    for column in ("mode", "size", "rank for 90%", "rank for 99%", "at 1/4 size", "at 1/2 size"):
        spectra.add_column(column, justify="left" if column == "mode" else "right")
    for name, size in zip(report.mode_names, report.mode_sizes):
        curve = report.energy[name]
        spectra.add_row(
            name,
            str(size),
            _rank_for(curve, 0.9),
            _rank_for(curve, 0.99),
            f"{curve[max(size // 4, 1) - 1]:.3f}",
            f"{curve[max(size // 2, 1) - 1]:.3f}",
        )
    return spectra


def sweep_table(report):
    """One row per sweep point: the mode and its rank, the compression, the error (and PCKh)."""
    from rich.table import Table

    sweep = Table(
        title="One mode truncated at a time (Tucker, other modes full)", title_justify="left"
    )
    columns = ["mode", "rank", "compression", "relative error"]
    if report.original_pckh is not None:
        columns.append("PCKh@0.5")
    for column in columns:
        sweep.add_column(column, justify="left" if column == "mode" else "right")
    for p in report.sweep:
        row = [
            p.mode,
            f"{p.rank}/{report.mode_sizes[report.mode_names.index(p.mode)]}",
            f"{p.compression_ratio:.2f}x",
            f"{p.relative_error:.4f}",
        ]
        if p.pckh is not None:
            row.append(f"{p.pckh:.1f}%")
        sweep.add_row(*row)
    return sweep


def _rank_for(curve: list[float], fraction: float) -> str:
    """The smallest rank keeping ``fraction`` of the energy."""
    return str(next((r + 1 for r, e in enumerate(curve) if e >= fraction - 1e-12), len(curve)))
