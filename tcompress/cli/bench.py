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
@click.option(
    "--provider",
    "providers",
    multiple=True,
    metavar="NAME[,NAME...]",
    help="ONNX Runtime execution provider to run on (repeatable, or comma-separated; 'CUDA' is "
    "short for CUDAExecutionProvider): every file is timed on each [default: "
    "CPUExecutionProvider].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@handle_errors(providers="--provider")
def bench(files, input_size, batch, threads, repeats, warmup, providers, as_json):
    """Time ONNX FILES in ONNX Runtime and compare each with the first.

    FILES are any that tcompress export writes: float32, float16 and INT8 ONNX files, and ONNX
    Runtime's mobile format (.ort). Every model gets the same seeded input, in its own layout
    (channels last for a PoseNet export) and type (float16 for a float16 file without
    --keep-io-types). The timed rounds are interleaved (each round runs every model once on
    every provider), so load on a shared machine weighs on all of them alike. Alongside the
    measured speed-up, the MAC bound is the speed-up an ideal runtime would reach (ratio of
    multiply-accumulates), and the fraction of it that the runtime delivers; the int8 column is
    the share of the MACs that runs in int8. An .ort file's MACs are counted from the .onnx file
    of the same name beside it, and are unknown without one.

    The export of a network converted with --arch is timed like any other (its input is read
    off the file): an ONNX file holds its whole graph, so bench needs no --arch.

    \b
    Examples:
      tcompress bench dense.onnx tnet.onnx
      tcompress bench dense.onnx tucker.onnx mps.onnx --input-size 128 --threads 1
      tcompress bench tnet.onnx tnet-fp16.onnx tnet-int8.onnx tnet.ort --json
      tcompress bench dense.onnx tnet-fp16.onnx --provider CUDA --provider CPU
    """
    import onnxruntime
    from rich.markup import escape

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
            providers=list(providers) or None,
        )
    height, width = results[0].input_size
    requested = list(dict.fromkeys(r.requested_provider for r in results))
    settings = dict(
        input_size=[height, width],
        input_shape=list(results[0].input_shape),
        input_layout=results[0].input_layout,
        batch=batch,
        threads=threads,
        repeats=repeats,
        warmup=warmup,
        seed=0,
        provider=requested[0],
        providers=requested,
        onnxruntime=onnxruntime.__version__,
    )
    if as_json:
        print_json({"settings": settings, "results": [r.to_dict() for r in results]})
        return
    console = stdout()
    console.print(bench_table(results))
    on = ", ".join(p.removesuffix("ExecutionProvider") for p in requested)
    console.print(
        f"[dim]Latencies are medians of {repeats} interleaved rounds ({warmup} warm-up) at "
        f"batch {batch}, {height}x{width}"
        + (" channels last" if results[0].input_layout == "NHWC" else "")
        + f", {threads} thread(s), ONNX Runtime "
        f"{onnxruntime.__version__} on {on}; every ratio is to the first file (ref) on the same "
        "provider, larger meaning smaller or faster.[/dim]"
    )
    console.print(
        "[dim]MAC bound = MACs of ref / MACs; fraction of bound = speed-up / MAC bound; int8 = "
        "share of the MACs run in int8; – = unknown.[/dim]"
    )
    seen = set()
    for r in results:
        for note in r.notes:
            line = f"{Path(r.path).name}: {note}"
            if line not in seen:
                seen.add(line)
                console.print(f"[dim]{escape(line)}[/dim]")
