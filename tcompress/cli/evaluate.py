"""``tcompress evaluate``: PCKh of a dense hourglass, a T-Net or an ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import handle_errors, images_option, main
from tcompress.vocabulary import SPLITS


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--data",
    default="synthetic",
    show_default=True,
    help="'synthetic', an MPII-style annotation JSON, or a folder holding annotations.json.",
)
@images_option
@click.option(
    "--mpii-mat",
    type=click.Path(path_type=Path),
    default=None,
    help="MPII's validation entries (the test split): score against the ground truth and head "
    "boxes of this detections_our_format.mat-style file (bearpaw's evaluation/data/).",
)
@click.option(
    "--preds-mat",
    type=click.Path(path_type=Path),
    default=None,
    help="MPII: also write the predictions (source-image pixels) as a .mat file with 'preds' "
    "(N, 16, 2), the layout the public evaluation scripts read.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing --preds-mat file.")
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default=None,
    help="'val' for choices, 'test' for reported figures (MPII-style data: its validation "
    "entries) [default: val on synthetic data, test on MPII-style data].",
)
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
def evaluate(
    model,
    data,
    images,
    mpii_mat,
    preds_mat,
    force,
    split,
    n,
    image_size,
    batch_size,
    flip,
    device,
    seed,
    as_json,
):
    """PCKh@0.5 of MODEL (dense checkpoint, T-Net or .onnx file), per joint and mean.

    On MPII-style data the predictions are mapped back to the source images and scored by
    MPII's own rules: head size 0.6 x the head-box diagonal (the annotations' 'headboxes' or
    --mpii-mat), a strict threshold, every annotated joint, Head = head top, Mean over the 14
    joints but pelvis and thorax. On synthetic data joints are scored in the crop.

    PCKh needs a network that outputs joint heatmaps: a network converted with --arch (your
    own, whose task tcompress does not know) and an ONNX file without heatmap outputs are
    refused; score them with your own metric in Python, as examples/custom_network.py does.

    \b
    Examples:
      tcompress evaluate hg.pth --data synthetic -n 500
      tcompress evaluate tnet.pt --data data/mpii/mpii_annotations.json --flip
      tcompress evaluate tnet.pt --data data/mpii/ --mpii-mat detections_our_format.mat \\
          --preds-mat preds.mat
      tcompress evaluate tnet.onnx --data synthetic --json
    """
    from tcompress.cli.progress import CountProgress
    from tcompress.cli.render import print_json, refuse_custom_network
    from tcompress.evaluation import evaluate as run_evaluation

    if str(model).endswith(".onnx"):
        refuse_without_heatmaps(model)
    elif not str(model).endswith(".ort"):  # ONNX Runtime's format: its outputs are checked later
        refuse_custom_network(
            model,
            "evaluate",
            "scores pose heatmaps (PCKh@0.5 on joints)",
            "Score it with your own metric on {load}, or its ONNX export in ONNX Runtime",
        )
    with CountProgress("Evaluating", show=not as_json) as bar:
        report = run_evaluation(
            model,
            data,
            split=split,
            n=n,
            image_size=image_size,
            batch_size=batch_size,
            flip=flip,
            device=device,
            seed=seed,
            images=images,
            mpii_mat=mpii_mat,
            preds_mat=preds_mat,
            force=force,
            progress=bar.update,
        )
    if as_json:
        print_json(report.to_dict())
    else:
        print_evaluation(report)


def refuse_without_heatmaps(path) -> None:
    """Refuse an ONNX file none of whose outputs can be heatmaps (4-d, or 5-d stacked), such as
    the export of a classification network converted with --arch; a file whose graph does not
    say its output shapes, or cannot be read, is left to the evaluation's own checks."""
    import onnx

    from tcompress.cli.render import CUSTOM_EXAMPLE
    from tcompress.errors import EvaluationError

    try:
        outputs = onnx.load(str(path), load_external_data=False).graph.output
    except Exception:  # not there or not ONNX: the evaluation's loading says what is wrong
        return
    if not outputs or not all(o.type.tensor_type.HasField("shape") for o in outputs):
        return
    shapes = [
        [d.dim_value or d.dim_param or "?" for d in o.type.tensor_type.shape.dim] for o in outputs
    ]
    if any(len(shape) in (4, 5) for shape in shapes):
        return
    shown = ", ".join(
        f"'{o.name}' of shape ({', '.join(map(str, shape))})" for o, shape in zip(outputs, shapes)
    )
    raise EvaluationError(
        f"ONNX file '{path}' has output(s) {shown}; tcompress evaluate scores pose heatmaps "
        "(PCKh@0.5 on joints) and expects (N, joints, h, w) outputs, as the exports of the "
        "stacked hourglasses have. Score a network of your own in ONNX Runtime with your own "
        f"metric ({CUSTOM_EXAMPLE} shows how)"
    )


def print_evaluation(report) -> None:
    """The tables of ``tcompress evaluate``: what was evaluated, PCKh per joint, the means."""
    from rich.table import Table

    from tcompress.cli.render import stdout

    result, mpii, console = report.result, report.rules == "mpii", stdout()
    console.print(
        f"[bold]{report.model}[/bold] ({report.kind}) on {report.data} / {report.split}"
        f", {report.image_size}x{report.image_size}, {result.n_samples} samples"
        + (", flip-averaged" if report.flip else "")
    )
    if mpii:
        console.print(
            f"MPII's rules: source-image pixels, head sizes from {report.head_sizes}, "
            "distance < 0.5 x head size, every annotated joint"
        )
    else:
        console.print("scored in the crop, head sizes from the head joints (synthetic rules)")
    table = Table(title=f"{result.label} per joint (%)", title_justify="left")
    table.add_column("joint")
    table.add_column(result.label, justify="right")
    table.add_column("annotated" if mpii else "visible", justify="right")
    for name, accuracy, count in zip(result.joint_names, result.per_joint, result.counts):
        table.add_row(name, "-" if count == 0 else f"{accuracy:.1f}", str(count))
    console.print(table)
    groups = ", ".join(f"{k} {v:.1f}" for k, v in result.groups.items())
    console.print(f"groups: {groups}")
    if mpii:
        console.print(
            f"[bold]Mean {result.label}: {result.mean:.2f}%[/bold] (MPII's: the 14 joints but "
            f"pelvis and thorax, unweighted; over joint instances {result.mean_instances:.2f}%; "
            f"Mean PCKh@0.1 {report.result_at_0_1.mean:.2f}%)"
        )
    else:
        console.print(
            f"[bold]mean {result.label}: {result.mean:.1f}%[/bold] (all visible joints but "
            f"{', '.join(result.mean_excludes) or 'none'}; unweighted over joints "
            f"{result.mean_joints:.1f}%)"
        )
    if report.preds_mat is not None:
        console.print(f"predictions written to {report.preds_mat}")
