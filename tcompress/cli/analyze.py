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
@click.option(
    "--arch",
    default=None,
    metavar="MODULE:FACTORY",
    help="A function (importable, called without arguments) that builds the dense network the "
    "checkpoint loads into, as for convert. Needs --family; not with --data.",
)
@click.option(
    "--family",
    default=None,
    metavar="PATTERN",
    help="With --arch: module names of the convolutions to stack, whose {named} parts become "
    "the leading modes, as for convert.",
)
@click.option("--force", is_flag=True, help="Overwrite the files already in --output-dir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors
def analyze(
    checkpoint, data, val_samples, image_size, points, output_dir, arch, family, force, as_json
):
    """Where is W redundant? The spectrum of every mode (energy kept against rank) and a sweep
    that compresses one mode at a time (Tucker), with the whole-network compression ratio and
    the relative error of W, and with --data the accuracy before fine-tuning.

    CHECKPOINT is a dense network: a stacked hourglass of a known layout, or any network with
    --arch and --family (its modes described by the pattern's names; --data, which scores pose
    heatmaps, does not apply).

    \b
    Examples:
      tcompress analyze hg.pth
      tcompress analyze hg.pth --data synthetic --val-samples 200 -o analysis/
      tcompress analyze resnet.pth --arch mymodels:resnet \\
          --family 'layer{stage}.{block}.conv{conv}'
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
            arch=arch,
            family=family,
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
    for table in spectra_tables(report):
        console.print(table)
    console.print(sweep_table(report))
    if report.original_pckh is not None:
        console.print(f"original PCKh@0.5: {report.original_pckh:.1f}%")
    print_written(console, json_path, figure)


def spectra_tables(report) -> list:
    """One table per tensor (the report's ``groups``, or W alone), one row per mode: its
    meaning, the ranks keeping 90% and 99% of the energy, the energy at 1/4 and 1/2 size."""
    if not report.groups:
        described = {
            "mode_names": report.mode_names,
            "mode_values": report.mode_values,
            "architecture": report.architecture,
        }
        return [spectra_table(described, report.mode_sizes, report.energy)]
    return [
        spectra_table(
            dict(group, architecture=report.architecture),
            group["mode_sizes"],
            group["energy"],
            title=f"Energy of tensor {i} of {len(report.groups)}, {group['name']} "
            f"({group['members']} kernels), kept per mode (fraction of ||W||^2)",
        )
        for i, group in enumerate(report.groups, 1)
    ]


def spectra_table(described, sizes, energy, title=None):
    """The spectra of one tensor's modes; ``described`` names them for
    :func:`~tcompress.stacking.mode_descriptions`."""
    from rich.table import Table

    from tcompress.stacking import mode_descriptions

    title = title or "Energy of W kept per mode (fraction of ||W||^2)"
    spectra = Table(title=title, title_justify="left")
    columns = ("mode", "meaning", "size", "rank for 90%", "rank for 99%")
    for column in (*columns, "at 1/4 size", "at 1/2 size"):
        spectra.add_column(
            column,
            justify="left" if column in ("mode", "meaning") else "right",
            style="dim" if column == "meaning" else None,
        )
    meanings = mode_descriptions(described)
    for name, meaning, size in zip(described["mode_names"], meanings, sizes):
        curve = energy[name]
        spectra.add_row(
            name,
            meaning,
            str(size),
            _rank_for(curve, 0.9),
            _rank_for(curve, 0.99),
            f"{curve[max(size // 4, 1) - 1]:.3f}",
            f"{curve[max(size // 2, 1) - 1]:.3f}",
        )
    return spectra


def sweep_table(report):
    """One row per sweep point: the tensor (when there are several), the mode and its rank, the
    compression, the error (and PCKh)."""
    from rich.table import Table

    sweep = Table(
        title="One mode truncated at a time (Tucker, other modes full)", title_justify="left"
    )
    sizes = {
        (g["name"], n): s for g in report.groups for n, s in zip(g["mode_names"], g["mode_sizes"])
    }
    sizes = sizes or {(None, n): s for n, s in zip(report.mode_names, report.mode_sizes)}
    columns = ["tensor"] if report.groups else []
    columns += ["mode", "rank", "compression", "relative error"]
    if report.original_pckh is not None:
        columns.append("PCKh@0.5")
    for column in columns:
        sweep.add_column(column, justify="left" if column in ("tensor", "mode") else "right")
    for p in report.sweep:
        row = [p.group] if report.groups else []
        row += [
            p.mode,
            f"{p.rank}/{sizes[p.group, p.mode]}",
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
