"""``tcompress convert``: a dense checkpoint becomes a T-Net or a layer-wise compressed file."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress import methods
from tcompress.cli import handle_errors, main
from tcompress.vocabulary import FORWARD_FORMS


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--method",
    "-m",
    default="tucker",
    show_default=True,
    help=f"{', '.join(methods.names(methods.TNET))}: a T-Net (one shared tensor); "
    f"{', '.join(methods.names(methods.LAYERWISE))}: every block convolution decomposed on its "
    "own.",
)
@click.option(
    "--ranks",
    "-r",
    default="full",
    show_default=True,
    help="In the method's grammar (a hourglass's modes: stack,depth,pathway,block,f_in,f_out,h,"
    "w). " + methods.rank_help() + " A --family of several groups (one tensor per kernel "
    "geometry) takes ranks per group: 'layer1:f_in=32;layer3:f_in=128,f_out=128'; ranks without "
    "a group apply to every group where they fit, a group not named keeps full (or chosen) "
    "ranks.",
)
@click.option(
    "--ratio",
    type=float,
    default=None,
    help="Choose the ranks for this whole-network compression ratio (T-Nets: met within 3%, "
    "ranks given with --ranks stay fixed, several groups' ranks chosen together; layer-wise: the "
    "per-layer rank, the same for every layer, whose ratio is nearest).",
)
@click.option(
    "--energy",
    type=float,
    default=None,
    help="Choose the fewest parameters keeping this fraction of ||W||^2 (e.g. 0.9).",
)
@click.option(
    "--refine",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Tucker: HOOI sweeps after the HOSVD; CP: ALS sweeps [CP default: 25] (per layer "
    "for the layer-wise methods).",
)
@click.option(
    "--refine-data",
    default=None,
    metavar="DATA",
    help="Fit the factors (layer-wise: every chain) so that every block convolution's output on "
    "these images stays close to the original's (data-aware refinement): 'synthetic', an image "
    "folder or an MPII-style set; labels are not used.",
)
@click.option(
    "--data",
    default=None,
    metavar="DATA",
    help="With --ratio or --energy: choose the ranks by what each mode's (MPS, TR: each "
    "bond's; with --per-layer, each layer's) truncation costs the block convolutions' outputs "
    "on these images (a --family of several groups: every group's at once); 'synthetic', an "
    "image folder or an MPII-style set; labels are not used.",
)
@click.option(
    "--whiten",
    default=None,
    metavar="DATA",
    help="T-Net methods: weight the truncated kernel modes by these images' block-convolution "
    "inputs before decomposing, so each discarded direction is the one the outputs miss least "
    "(a whitened start; combines with --refine-data).",
)
@click.option(
    "--per-layer",
    is_flag=True,
    help="Layer-wise Tucker and Tai with --ratio: every layer takes ranks of its own, allocated "
    "on the kernels' spectra (each relative to its norm) [default: one rank for every layer].",
)
@click.option(
    "--refine-samples",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Images read from --data, --whiten and --refine-data.",
)
@click.option(
    "--forward",
    "forward",
    type=click.Choice(FORWARD_FORMS),
    default="reconstructed",
    show_default=True,
    help="Forward form the saved T-Net uses by default (layer-wise networks have one).",
)
@click.option(
    "--arch",
    default=None,
    metavar="MODULE:FACTORY",
    help="For a network of another layout: a function (importable, no arguments) that builds "
    "the dense network the checkpoint loads into. Needs --family.",
)
@click.option(
    "--family",
    default=None,
    metavar="PATTERN",
    help="With --arch: module names of the convolutions to stack, whose {named} parts become "
    "the leading modes, e.g. 'layer{stage}.{block}.conv{conv}' ('*' matches within a part); "
    "one tensor per group of same-geometry kernels, a kernel alone of its geometry stays dense.",
)
@click.option(
    "--orthonormal",
    is_flag=True,
    help="Tucker: keep the HOSVD's orthonormal factors [default: factors scaled by "
    "sqrt(D/R) and the core by the inverse, the same W with the core at W's scale, which "
    "fine-tunes faster].",
)
@click.option("--device", default="cpu", show_default=True, help="Where to decompose (cpu, cuda).")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Output file [default: CHECKPOINT's name with .METHOD.pt, beside it].",
)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors
def convert(
    checkpoint,
    method,
    ranks,
    ratio,
    energy,
    refine,
    refine_data,
    data,
    whiten,
    per_layer,
    refine_samples,
    forward,
    arch,
    family,
    orthonormal,
    device,
    output,
    force,
    as_json,
):
    """Convert a dense CHECKPOINT into a T-Net or a layer-wise compressed network.

    Stacked hourglasses of tcompress, of bearpaw/pytorch-pose (hg) and of princeton-vl
    (PoseNet) are recognised from the keys (module. and model.module. prefixes, wrapped
    dicts); any other network needs --arch and --family. The file is loaded with
    weights_only=True, so nothing in it can run.

    \b
    Examples:
      tcompress convert hg.pth --ranks 4,4,3,2,64,64,3,3 -o tnet.pt
      tcompress convert hg.pth --ranks f_in=64,f_out=64 --refine 2 -o tnet.pt
      tcompress convert hg.pth --method mps --ranks 4,16,48,96,64,9,3 -o tnet-mps.pt --json
      tcompress convert hg.pth --ratio 4 -o tnet.pt
      tcompress convert hg.pth --ratio 3 --data synthetic -o tnet.pt
      tcompress convert hg.pth --ranks f_in=24,f_out=24 --whiten synthetic -o tnet.pt
      tcompress convert hg.pth --ratio 4 --ranks stack=1 --method tucker -o tnet.pt
      tcompress convert hg.pth --method mps --energy 0.9 -o tnet-mps.pt
      tcompress convert hg.pth --method cp --ranks 512 -o tnet-cp.pt
      tcompress convert hg.pth --method tr --ranks 1,8,24,48,96,9,3,2 -o tnet-tr.pt
      tcompress convert resnet.pth --arch mymodels:resnet \\
          --family 'layer{stage}.{block}.conv{conv}' --ranks conv=1,f_in=32 -o tnet.pt
      tcompress convert resnet34.pth --arch mymodels:resnet34 \\
          --family 'layer{stage}.{block}.conv{conv}' \\
          --ranks 'layer1:f_in=32;layer3:f_in=128,f_out=128' -o tnet.pt
      tcompress convert hg.pth --method layerwise-tucker --ranks 64,64 -o hg-lw.pt
      tcompress convert hg.pth --method tai --ratio 3 -o hg-tai.pt
      tcompress convert hg.pth --method layerwise-tucker --ratio 3 --per-layer -o hg-lw.pt
    """
    from tcompress.checkpoint import check_output
    from tcompress.cli.render import print_json, print_summary, quiet_status, stderr, stdout
    from tcompress.conversion import convert as convert_model
    from tcompress.serialize import save

    method = methods.check(method)
    if output is None:
        output = checkpoint.with_name(f"{checkpoint.stem}.{method}.pt")
    out = check_output(output, force=force, inputs=(checkpoint,))
    status = stderr().status("Converting", spinner="dots") if not as_json else quiet_status()
    with status:
        tnet = convert_model(
            checkpoint,
            method=method,
            ranks=ranks,
            ratio=ratio,
            energy=energy,
            refine=refine,
            refine_data=refine_data,
            data=data,
            whiten=whiten,
            per_layer=per_layer,
            refine_samples=refine_samples,
            forward=forward,
            arch=arch,
            family=family,
            balance=not orthonormal,
            device=device,
            progress=lambda phase: status.update(phase),
        )
        status.update("Saving")
        save(tnet, out, force=force)
    summary = dict(tnet.meta["summary"], output=str(out))
    if as_json:
        print_json(summary)
    else:
        print_summary(stdout(), summary, out=str(out))
