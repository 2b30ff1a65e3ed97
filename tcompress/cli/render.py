"""Rich tables for conversion summaries and model descriptions."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from tcompress.stacking import MODE_DESCRIPTIONS


def stdout() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def modes_table(summary: dict, title: str = "Weight tensor W") -> Table:
    is_mps = summary["method"] == "mps"
    table = Table(title=title, title_justify="left")
    table.add_column("mode")
    table.add_column("name")
    table.add_column("meaning", style="dim")
    table.add_column("size", justify="right")
    if not is_mps:
        table.add_column("rank", justify="right")
    for k, (name, size) in enumerate(zip(summary["mode_names"], summary["mode_sizes"])):
        row = [str(k + 1), name, MODE_DESCRIPTIONS[k], str(size)]
        if not is_mps:
            rank = summary["ranks"][k]
            row.append(f"{rank}" if rank < size else f"{rank} (full)")
        table.add_row(*row)
    return table


def bonds_table(summary: dict) -> Table:
    table = Table(title="MPS bond ranks", title_justify="left")
    names = summary["mode_names"]
    table.add_column("bond")
    table.add_column("between")
    table.add_column("rank", justify="right")
    for k, rank in enumerate(summary["ranks"]):
        table.add_row(str(k + 1), f"{names[k]} | {names[k + 1]}", str(rank))
    return table


def figures_table(summary: dict) -> Table:
    table = Table(title="Parameters", title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("ratio", justify="right")
    tb, ta = summary["tensor_params_before"], summary["tensor_params_after"]
    nb, na = summary["params_before"], summary["params_after"]
    table.add_row("tensor W", f"{tb:,}", f"{ta:,}", f"{tb / ta:.2f}x")
    table.add_row("whole network", f"{nb:,}", f"{na:,}", f"[bold]{nb / na:.2f}x[/bold]")
    return table


def print_summary(console: Console, summary: dict, out: str | None = None) -> None:
    method = {"tucker": "Tucker", "mps": "MPS (tensor train)"}[summary["method"]]
    init = "TT-SVD" if summary["method"] == "mps" else "HOSVD"
    if summary.get("refine"):
        init += f" + {summary['refine']} HOOI sweep(s)"
    console.print(f"[bold]T-Net[/bold] {method}, initialised by {init}")
    console.print(modes_table(summary))
    if summary["method"] == "mps":
        console.print(bonds_table(summary))
    console.print(figures_table(summary))
    errors = summary.get("errors") or []
    line = f"relative error ||W - W_hat|| / ||W||: [bold]{summary['relative_error']:.4g}[/bold]"
    if len(errors) > 1:
        line += f" (HOSVD {errors[0]:.4g} -> after HOOI {errors[-1]:.4g})"
    console.print(line)
    for note in summary.get("notes") or []:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"time: {summary['seconds']:.2f} s")
    if out:
        console.print(f"wrote {out}")


def validation_table(validation: dict) -> Table:
    """Checks of an ONNX export: structure and names in the title, then every output at every
    batch size against PyTorch."""
    title = (
        f"Validation: onnx.checker {_mark(validation['checker'])}, "
        f"names {_mark(validation['names'])}; ONNX Runtime vs PyTorch"
    )
    table = Table(title=title, title_justify="left")
    for column in ("batch", "output", "shape", "abs diff", "rel diff", "tol", ""):
        table.add_column(column, justify="right" if column not in ("output", "") else "left")
    for c in validation["outputs"]:
        table.add_row(
            str(c["batch"]),
            c["name"],
            "x".join(map(str, c["shape"])),
            f"{c['max_abs_diff']:.2e}",
            f"{c['max_rel_diff']:.2e}",
            f"{c['tolerance']:.1e}",
            _mark("passed" if c["passed"] else "failed"),
        )
    return table


def _mark(result: str) -> str:
    return {"passed": "[green]passed[/green]", "failed": "[red]failed[/red]"}.get(result, result)
