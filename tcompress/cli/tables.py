"""The tables of ``tcompress compare``: one row per method and ratio, and the paired differences."""

from __future__ import annotations


def difference_table(report):
    """The paired differences of a :class:`~tcompress.experiments.compare.CompareReport`
    (:func:`~tcompress.experiments.compare.paired_differences`), or None when it has none."""
    from rich.table import Table

    from tcompress.experiments.compare import paired_differences

    differences = paired_differences(report)
    if not differences:
        return None
    table = Table(
        title="Paired differences after fine-tuning, PCKh points [95% interval over the same "
        "resampled images]",
        title_justify="left",
    )
    for column in ("target", "row", "minus", "difference"):
        table.add_column(column, justify="right" if column in ("target", "difference") else "left")
    for d in differences:
        table.add_row(f"{d.ratio:g}x", d.a, d.b, f"{d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}]")
    return table


def comparison_table(report: dict):
    """One row per method and ratio: ranks, parameters, ratio, PCKh before and after fine-tuning
    (95% interval), ONNX speed-up."""
    from rich.table import Table

    s = report["settings"]
    table = Table(
        title=f"PCKh@0.5 on {s['val_samples']} {s.get('split', 'val')} images; fine-tuning "
        f"{s['steps']} steps x "
        f"{s['batch_size']}, mean of {len(s['seeds'])} seeds [95% interval]",
        title_justify="left",
    )
    for column in ("method", "target", "ranks", "params", "ratio", "before", "after", "ONNX"):
        table.add_column(column, justify="left" if column in ("method", "ranks") else "right")

    def pck(a):
        return "-" if a is None else f"{a['mean']:.1f} [{a['low']:.1f}, {a['high']:.1f}]"

    for r in report["rows"]:
        if r["error"]:
            table.add_row(r["method"], f"{r['target']:g}x", f"[red]{r['error']}[/red]", *[""] * 5)
            continue
        table.add_row(
            r["method"],
            "-" if r["target"] is None else f"{r['target']:g}x",
            "-" if r["ranks"] is None else ",".join(map(str, r["ranks"])),
            f"{r['params']:,}",
            f"{r['ratio']:.2f}x",
            pck(r["before"]),
            pck(r["after"]),
            "-" if r["onnx_speedup"] is None else f"{r['onnx_speedup']:.2f}x ({r['onnx_form']})",
        )
    return table
