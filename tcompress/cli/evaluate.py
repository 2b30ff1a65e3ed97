"""``tcompress evaluate``: PCKh of a dense hourglass, a T-Net or an ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import handle_errors, main


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--data",
    default="synthetic",
    show_default=True,
    help="'synthetic', an MPII-style annotation JSON, or a folder holding annotations.json.",
)
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option(
    "-n",
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate the first N samples [default: the whole split; synthetic: 1000].",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=16),
    default=None,
    help="Input size [default: an ONNX file's own, else 256].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (PyTorch models).")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic data set.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors
def evaluate(model, data, split, n, image_size, batch_size, flip, device, seed, as_json):
    """PCKh@0.5 of MODEL (dense checkpoint, T-Net or .onnx file), per joint and mean.

    \b
    Examples:
      tcompress evaluate hg.pth --data synthetic -n 500
      tcompress evaluate tnet.pt --data mpii/annotations.json --flip
      tcompress evaluate tnet.onnx --data synthetic --json
    """
    from rich.progress import Progress
    from rich.table import Table

    from tcompress.cli.render import print_json, stderr, stdout
    from tcompress.evaluation.run import evaluate as run_evaluation
    from tcompress.evaluation.run import load_for_evaluation

    loaded = load_for_evaluation(model)  # load errors come before any progress display
    name = str(model)
    kwargs = dict(
        data=data,
        split=split,
        n=n,
        image_size=image_size,
        batch_size=batch_size,
        flip=flip,
        device=device,
        seed=seed,
    )
    if as_json:
        print_json(dict(run_evaluation(loaded, **kwargs).to_dict(), model=name))
        return
    with Progress(console=stderr(), transient=True) as bar:
        task = bar.add_task("Evaluating", total=None)
        report = run_evaluation(
            model,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            **kwargs,
        )
    result = report.result
    console = stdout()
    console.print(
        f"[bold]{report.model}[/bold] ({report.kind}) on {report.data} / {report.split}"
        f", {report.image_size}x{report.image_size}, {result.n_samples} samples"
        + (", flip-averaged" if report.flip else "")
    )
    table = Table(title=f"{result.label} per joint (%)", title_justify="left")
    table.add_column("joint")
    table.add_column(result.label, justify="right")
    table.add_column("visible", justify="right")
    for name, accuracy, count in zip(result.joint_names, result.per_joint, result.counts):
        table.add_row(name, "-" if count == 0 else f"{accuracy:.1f}", str(count))
    console.print(table)
    groups = ", ".join(f"{k} {v:.1f}" for k, v in result.groups.items())
    console.print(f"groups: {groups}")
    console.print(
        f"[bold]mean {result.label}: {result.mean:.1f}%[/bold] (all visible joints but "
        f"{', '.join(result.mean_excludes) or 'none'}; unweighted over joints "
        f"{result.mean_joints:.1f}%)"
    )
