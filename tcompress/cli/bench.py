"""``tcompress bench``: time ONNX files in ONNX Runtime and compare them with the first."""

from __future__ import annotations

import math
from pathlib import Path

import click

from tcompress.cli import handle_errors, main


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--input-size",
    type=click.IntRange(min=1),
    default=None,
    help="Input height and width [default: the first model's, if its input has a fixed size; "
    "else 256].",
)
@click.option(
    "--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Images per run."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="ONNX Runtime intra-op threads.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Timed rounds; each runs every model once, in the order given.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Untimed rounds before them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@handle_errors
def bench(files, input_size, batch, threads, repeats, warmup, as_json):
    """Time ONNX FILES in ONNX Runtime (CPU) and compare each with the first.

    Every model gets the same seeded input. The timed rounds are interleaved (each round runs
    every model once), so load on a shared machine weighs on all of them alike. Alongside the
    measured speed-up, the MAC bound is the speed-up an ideal runtime would reach (ratio of
    multiply-accumulates), and the fraction of it that the runtime delivers.

    \b
    Examples:
      tcompress bench dense.onnx tnet.onnx
      tcompress bench dense.onnx tucker.onnx mps.onnx --input-size 128 --threads 1
      tcompress bench dense.onnx tnet.onnx --repeats 50 --json
    """
    import onnxruntime

    from tcompress.cli.render import print_json, stderr, stdout
    from tcompress.export.bench import bench_onnx

    status = stderr().status("Measuring", spinner="dots") if not as_json else _Quiet()
    with status:
        results = bench_onnx(
            [str(f) for f in files],
            input_size=input_size,
            batch=batch,
            threads=threads,
            repeats=repeats,
            warmup=warmup,
            seed=0,
            progress=lambda phase: status.update(phase),
        )
    height, width = results[0].input_shape[2:]
    settings = dict(
        input_size=[height, width],
        input_shape=list(results[0].input_shape),
        batch=batch,
        threads=threads,
        repeats=repeats,
        warmup=warmup,
        seed=0,
        provider="CPUExecutionProvider",
        onnxruntime=onnxruntime.__version__,
    )
    if as_json:
        print_json({"settings": settings, "results": [r.to_dict() for r in results]})
        return
    console = stdout()
    console.print(_table(results))
    console.print(
        f"[dim]Latencies are medians of {repeats} interleaved rounds ({warmup} warm-up) at "
        f"batch {batch}, {height}x{width}, {threads} thread(s), ONNX Runtime "
        f"{onnxruntime.__version__} on the CPU; every ratio is to the first file (ref), "
        "larger meaning smaller or faster. MAC bound = MACs of ref / MACs; fraction of bound = "
        "speed-up / MAC bound.[/dim]"
    )


def _table(results):
    from rich.table import Table

    table = Table(title="ONNX Runtime benchmark", title_justify="left")
    table.add_column("file")
    table.add_column("params", justify="right")
    table.add_column("size", justify="right")
    table.add_column("size ratio", justify="right")
    table.add_column("MACs (G)", justify="right")
    table.add_column("MAC bound", justify="right")
    table.add_column("speed-up", justify="right")
    table.add_column("fraction of bound", justify="right")
    table.add_column("median", justify="right", style="dim")
    for k, r in enumerate(results):
        name = f"{r.path} [dim](ref)[/dim]" if k == 0 else r.path
        speedup = f"{r.speedup:.2f}x" if k == 0 else f"[bold]{r.speedup:.2f}x[/bold]"
        table.add_row(
            name,
            f"{r.params:,}",
            _bytes(r.size_bytes),
            f"{r.size_ratio:.2f}x",
            _giga(r.macs),
            "-" if r.mac_bound is None else f"{r.mac_bound:.2f}x",
            speedup,
            "-" if r.bound_fraction is None else f"{r.bound_fraction:.0%}",
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
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args, **kwargs):
        pass
