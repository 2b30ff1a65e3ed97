"""``tcompress bench``: time ONNX files in ONNX Runtime and compare them with the first."""

from __future__ import annotations

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

    Every model gets the same seeded input, in its own layout (channels last for a PoseNet
    export). The timed rounds are interleaved (each round runs every model once), so load on a
    shared machine weighs on all of them alike. Alongside the measured speed-up, the MAC bound is
    the speed-up an ideal runtime would reach (ratio of multiply-accumulates), and the fraction
    of it that the runtime delivers.

    \b
    Examples:
      tcompress bench dense.onnx tnet.onnx
      tcompress bench dense.onnx tucker.onnx mps.onnx --input-size 128 --threads 1
      tcompress bench dense.onnx tnet.onnx --repeats 50 --json
    """
    import onnxruntime

    from tcompress.cli.render import bench_table, print_json, quiet_status, stderr, stdout
    from tcompress.export.bench import bench_onnx

    status = stderr().status("Measuring", spinner="dots") if not as_json else quiet_status()
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
    height, width = results[0].input_size
    settings = dict(
        input_size=[height, width],
        input_shape=list(results[0].input_shape),
        input_layout=results[0].input_layout,
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
    console.print(bench_table(results))
    console.print(
        f"[dim]Latencies are medians of {repeats} interleaved rounds ({warmup} warm-up) at "
        f"batch {batch}, {height}x{width}"
        + (" channels last" if results[0].input_layout == "NHWC" else "")
        + f", {threads} thread(s), ONNX Runtime "
        f"{onnxruntime.__version__} on the CPU; every ratio is to the first file (ref), "
        "larger meaning smaller or faster. MAC bound = MACs of ref / MACs; fraction of bound = "
        "speed-up / MAC bound.[/dim]"
    )
