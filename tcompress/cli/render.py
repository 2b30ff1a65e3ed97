"""Rich tables for conversion summaries and model descriptions, and what the commands share
around them (record files; the pose commands' refusal of a network of the user's own)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tcompress import methods
from tcompress.layouts import CUSTOM
from tcompress.stacking import mode_descriptions


def stdout() -> Console:
    # Piped output (logs, CI) gets room for the wide tables instead of rich's default 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def finite(obj):
    """``obj`` with every NaN or infinite float as None: JSON has no such numbers, and a parser
    other than Python's refuses the ``NaN`` that ``json.dumps`` writes (a T-Net trained from
    scratch has no relative error, a figure may be undefined)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(value) for value in obj]
    return obj


def print_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(finite(obj), indent=2, allow_nan=False) + "\n")


def modes_table(summary: dict, title: str = "Weight tensor W") -> Table:
    """One row per mode of W: name, meaning (:func:`~tcompress.stacking.mode_descriptions`),
    size and, for a method with one rank per mode (Tucker), its rank. ``summary`` is a
    conversion summary or one of its ``groups`` with the method added."""
    per_mode = methods.get(summary["method"]).per_mode  # one rank per mode (Tucker)
    table = Table(title=title, title_justify="left")
    table.add_column("mode")
    table.add_column("name")
    table.add_column("meaning", style="dim")
    table.add_column("size", justify="right")
    if per_mode:
        table.add_column("rank", justify="right")
    meanings = mode_descriptions(summary)
    for k, (name, size) in enumerate(zip(summary["mode_names"], summary["mode_sizes"])):
        row = [str(k + 1), name, meanings[k], str(size)]
        if per_mode:
            rank = summary["ranks"][k]
            row.append(f"{rank}" if rank < size else f"{rank} (full)")
        table.add_row(*row)
    return table


def bonds_table(summary: dict, title: str | None = None) -> Table:
    """One row per bond; a ring's last bond joins the last mode to the first."""
    table = Table(title=title or f"{summary['method'].upper()} bond ranks", title_justify="left")
    names = summary["mode_names"]
    table.add_column("bond")
    table.add_column("between")
    table.add_column("rank", justify="right")
    for k, rank in enumerate(summary["ranks"]):
        table.add_row(str(k + 1), f"{names[k]} | {names[(k + 1) % len(names)]}", str(rank))
    return table


def figures_table(summary: dict, first: str = "tensor W") -> Table:
    table = Table(title="Parameters", title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("ratio", justify="right")
    tb, ta = summary["tensor_params_before"], summary["tensor_params_after"]
    nb, na = summary["params_before"], summary["params_after"]
    table.add_row(first, f"{tb:,}", f"{ta:,}", f"{tb / ta:.2f}x")
    table.add_row("whole network", f"{nb:,}", f"{na:,}", f"[bold]{nb / na:.2f}x[/bold]")
    return table


def print_layerwise_summary(console: Console, summary: dict, out: str | None = None) -> None:
    """A layer-wise conversion: method, per-layer ranks, parameters, reconstruction error."""
    method = methods.get(summary["method"])
    console.print(f"[bold]Layer-wise[/bold] {method.title}")
    shape = "x".join(map(str, summary["mode_sizes"]))
    ranks = ",".join(map(str, summary["ranks"]))
    chosen = f", chosen for {summary['target']}" if summary.get("target") else ""
    which = "per-layer ranks"
    if summary.get("layer_ranks"):
        which = "ranks of each layer's own, at most"
        by_data = summary.get("layer_criterion") == "data"
        chosen += " on measured output costs" if by_data else " on the kernels' spectra"
    console.print(
        f"{summary.get('layers')} block kernels of {shape} ({','.join(summary['mode_names'])}); "
        f"{which} {method.rank_names} = [bold]{ranks}[/bold]{chosen}"
    )
    console.print(figures_table(summary, first="block kernels"))
    errors = summary.get("errors") or []
    line = (
        "relative error over all block kernels ||K - K_hat|| / ||K||: "
        f"[bold]{summary['relative_error']:.4g}[/bold]"
    )
    if errors:
        line += f" (per layer {min(errors):.3g} to {max(errors):.3g})"
    console.print(line)
    _footer(console, summary, out)


def _footer(console: Console, summary: dict, out: str | None) -> None:
    """What every conversion reports last: data-aware fit, notes, convolutions left dense, time."""
    fit = summary.get("data_aware")
    if fit:
        console.print(
            f"data-aware refinement on {fit['images']} images: block output error "
            f"{fit['error_before']:.4g} -> [bold]{fit['error_after']:.4g}[/bold] "
            f"(||W - W_hat|| / ||W|| was {fit['weight_error_before']:.4g}), "
            f"{fit['seconds']:.1f} s"
        )
    for note in summary.get("notes") or []:
        console.print(f"[yellow]note:[/yellow] {note}")
    left_out = summary.get("left_out") or []
    if left_out:
        console.print(
            f"[yellow]{len(left_out)} matching convolution(s) left dense[/yellow] "
            "(not in the tensor; counted in the figures):"
        )
        for entry in left_out:
            console.print(f"  {entry}")
    console.print(f"time: {summary['seconds']:.2f} s")
    if out:
        console.print(f"wrote {out}")


def print_summary(
    console: Console, summary: dict, out: str | None = None, *, architecture: dict | None = None
) -> None:
    """A conversion: method, how the ranks were chosen, the modes of W with their meanings, the
    parameters and the error; one block per tensor when the summary's ``groups`` hold several.
    ``architecture`` is a saved file's (its kernel family names the values of the grid modes)."""
    method = methods.get(summary["method"])
    if method.kind == methods.LAYERWISE:
        print_layerwise_summary(console, summary, out)
        return
    groups = summary.get("groups") or []
    if len(groups) == 1 and not summary.get("mode_names"):  # the one tensor's modes
        modes = ("mode_names", "mode_sizes", "ranks", "mode_values")
        summary = dict(summary, **{k: groups[0][k] for k in modes if k in groups[0]})
    name = summary.get("architecture") or "StackedHourglass"
    network = "a custom network" if name == CUSTOM else f"a {name}"
    if len(groups) > 1:
        console.print(
            f"[bold]T-Net[/bold] of {network}: {method.title}, one tensor per group of "
            f"same-shape kernels ({len(groups)} tensors)"
        )
    else:
        init = method.initialisation(summary)
        if summary.get("whitened"):
            whitened = ", ".join(summary["whitened"])
            init += f" of W weighted on the data in modes {whitened} (whitened)"
        console.print(f"[bold]T-Net[/bold] of {network}: {method.title}, initialised by {init}")
    if summary.get("target"):
        bound = summary.get("predicted_error")
        ranks = "" if len(groups) > 1 else f": {','.join(map(str, summary['ranks']))}"
        console.print(
            f"ranks chosen for {summary['target']}{ranks}"
            + (f" (predicted relative error at most {bound:.4g})" if bound is not None else "")
        )
    search = summary.get("rank_search")
    if search:
        console.print(
            f"searched on {search['images']} images: {len(search['quick']) or len(search['tried'])}"
            f" rank sets rated; the chosen one puts {100 * search['agreement']:.1f}% of the "
            "joints where the original does (BatchNorm re-estimated)"
        )
    if len(groups) > 1:
        _print_groups(console, summary, method, groups)
    else:
        family = (architecture or {}).get("family") or {}
        described = summary
        if family.get("mode_values") and not summary.get("mode_values"):
            described = dict(summary, mode_values=family["mode_values"])
        console.print(modes_table(described))
        if method.bonds:
            console.print(bonds_table(summary))
        console.print(figures_table(summary))
        line = f"relative error ||W - W_hat|| / ||W||: [bold]{summary['relative_error']:.4g}[/bold]"
        line += method.error_detail(summary)
        console.print(line)
    _footer(console, summary, out)


def _print_groups(console: Console, summary: dict, method, groups: list[dict]) -> None:
    """One block per tensor of a summary's ``groups`` (name, kernels, modes with their
    meanings, sizes and ranks, parameters, error), then the whole network's parameters."""
    for i, group in enumerate(groups, 1):
        described = dict(group, method=summary["method"])
        described["architecture"] = summary.get("architecture")
        title = (
            f"Tensor {i} of {len(groups)}: {group['name']}, {group['members']} kernels, "
            f"initialised by {method.initialisation(dict(summary, **group))}"
        )
        console.print(modes_table(described, title=title))
        if method.bonds:
            console.print(bonds_table(described, title=f"{group['name']}: bond ranks"))
        before, after = group["tensor_params_before"], group["tensor_params_after"]
        console.print(
            f"{group['name']}: parameters {before:,} -> {after:,} ({before / after:.2f}x), "
            f"relative error ||W - W_hat|| / ||W|| [bold]{group['relative_error']:.4g}[/bold]"
        )
    table = Table(title="Parameters", title_justify="left")
    for column in ("", "before", "after", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    tb = sum(g["tensor_params_before"] for g in groups)
    ta = sum(g["tensor_params_after"] for g in groups)
    nb, na = summary["params_before"], summary["params_after"]
    table.add_row(f"{len(groups)} tensors", f"{tb:,}", f"{ta:,}", f"{tb / ta:.2f}x")
    table.add_row("whole network", f"{nb:,}", f"{na:,}", f"[bold]{nb / na:.2f}x[/bold]")
    console.print(table)
    if summary.get("relative_error") is not None:
        console.print(
            "relative error of every tensor together ||W - W_hat|| / ||W||: "
            f"[bold]{summary['relative_error']:.4g}[/bold]"
        )


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


def bench_table(results, title: str = "ONNX Runtime benchmark") -> Table:
    """Per-file precision, size, parameters, MACs (and their int8 share) and latency, each as a
    ratio to the first file on the same provider; one section per provider. Unknown values (an
    ``.ort`` file's MACs without its ONNX file) show as "–". The provider column is there when
    it tells the rows apart: several providers, or one ONNX Runtime fell back from (with one
    provider, the caption names it; twelve columns do not fit a 120-column terminal)."""
    unknown = "–"
    requested = {r.requested_provider for r in results}
    with_provider = len(requested) > 1 or any(r.provider != r.requested_provider for r in results)
    table = Table(title=title, title_justify="left")
    table.add_column("file")
    table.add_column("precision")
    if with_provider:
        table.add_column("provider")
    table.add_column("params", justify="right")
    table.add_column("size", justify="right")
    table.add_column("size x", justify="right")
    table.add_column("GMACs", justify="right")
    table.add_column("int8", justify="right")
    table.add_column("MAC bound", justify="right")
    table.add_column("speed-up", justify="right")
    table.add_column("of bound", justify="right")
    table.add_column("median", justify="right", style="dim")
    group = None
    for r in results:
        first = r.requested_provider != group
        if first and group is not None:
            table.add_section()
        group = r.requested_provider
        provider = r.provider.removesuffix("ExecutionProvider")
        if r.provider != r.requested_provider:  # ONNX Runtime fell back to another provider
            asked = r.requested_provider.removesuffix("ExecutionProvider")
            provider += f" [dim](asked {asked})[/dim]"
        name = Path(r.path).name + (" [dim](ref)[/dim]" if first else "")
        speedup = f"{r.speedup:.2f}x" if first else f"[bold]{r.speedup:.2f}x[/bold]"
        table.add_row(
            name,
            r.precision or unknown,
            *([provider] if with_provider else []),
            unknown if r.params is None else f"{r.params:,}",
            _bytes(r.size_bytes),
            f"{r.size_ratio:.2f}x",
            unknown if r.macs is None else _giga(r.macs),
            unknown if r.int8_fraction is None else f"{r.int8_fraction:.0%}",
            unknown if r.mac_bound is None else f"{r.mac_bound:.2f}x",
            speedup,
            unknown if r.bound_fraction is None else f"{r.bound_fraction:.0%}",
            f"{r.median_ms:.3g} ms",
        )
    return table


def _giga(n: int) -> str:
    """Billions with about three significant digits and no exponent: 12.30, 0.0532."""
    g = n / 1e9
    return f"{g:.{max(2, 2 - math.floor(math.log10(g)))}f}" if g > 0 else "0"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _Quiet:
    """A stand-in for a rich status when nothing may be printed (``--json``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args, **kwargs):
        pass


def quiet_status() -> _Quiet:
    return _Quiet()


def record_files(out_dir, name: str) -> list[Path]:
    """The files :func:`write_record` writes: ``name.json``, and ``name.png`` where matplotlib
    is installed."""
    import importlib.util

    out_dir = Path(out_dir)
    files = [out_dir / f"{name}.json"]
    if importlib.util.find_spec("matplotlib") is not None:
        files.append(out_dir / f"{name}.png")
    return files


def check_record_files(out_dir, name: str, force: bool) -> None:
    """Refuse, before the work starts, the files of :func:`write_record` that exist already,
    unless ``force``."""
    from tcompress.checkpoint import check_new_files  # imports torch: only when writing

    check_new_files(record_files(out_dir, name), force=force)


def write_record(out_dir, name: str, record: dict, draw, *, force: bool = False) -> tuple:
    """Write ``out_dir/name.json`` (atomically) and, when matplotlib is there, ``name.png`` with
    ``draw(path, force)``; returns (json path, png path or None). An existing file is refused
    unless ``force``, even one created since :func:`check_record_files` looked."""
    from tcompress.checkpoint import atomic_write  # imports torch: only when writing

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    text = json.dumps(record, indent=1)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text), force=force)
    try:
        draw(png_path, force)
    except ImportError:
        return json_path, None
    return json_path, png_path


def print_written(console: Console, json_path, figure) -> None:
    """Say which files :func:`write_record` wrote, and how to get the figure when it could not."""
    console.print(f"wrote {json_path}" + (f" and {figure}" if figure else ""))
    if figure is None:
        console.print(
            "[yellow]note:[/yellow] no figure: matplotlib is not installed "
            "(pip install 'tcompress[plot]')"
        )


#: The example that fine-tunes, evaluates and exports a network of the user's own in Python.
CUSTOM_EXAMPLE = "examples/custom_network.py"


def refuse_custom_network(path, command: str, why: str, instead: str) -> None:
    """Refuse a T-Net or layer-wise file converted with ``--arch`` (a network of the user's own,
    whose task tcompress does not know) for ``command``, one made for the pose networks:
    ``why`` says what the command does that needs one, ``instead`` what to do in Python (with
    ``{load}`` for the call that loads the file). Other files pass, and so does a path that is
    not there (the command's own reading says so)."""
    from tcompress.checkpoint import read_checkpoint
    from tcompress.errors import CheckpointError

    if not os.path.isfile(path):
        return
    ckpt = read_checkpoint(path)
    architecture = (ckpt.payload.get("architecture") or {}) if ckpt.is_tnet else {}
    if architecture.get("name") != CUSTOM:
        return
    factory = architecture.get("factory")
    load = f"tcompress.load({str(path)!r}, arch={factory!r})"
    raise CheckpointError(
        f"'{path}' holds a network built by {factory!r} (converted with --arch); tcompress "
        f"{command} {why}, and expects a stacked hourglass of a layout it knows. "
        f"{instead.format(load=load)} ({CUSTOM_EXAMPLE} shows how)"
    )
