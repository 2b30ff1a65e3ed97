"""``tcompress info``: describe a dense hourglass checkpoint or a T-Net file."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import handle_errors, main


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--arch",
    default=None,
    metavar="MODULE:FACTORY",
    help="For a T-Net or layer-wise network converted with --arch: the factory that builds "
    "its network (its parameters are then counted; without it, the figures the file records). "
    "For a dense checkpoint of another layout: its factory, with --family.",
)
@click.option(
    "--family",
    default=None,
    metavar="PATTERN",
    help="With --arch, for a dense checkpoint: the convolutions to stack, as convert takes "
    "them; shows the tensors the conversion would make.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors
def info(file, arch, family, as_json):
    """Describe FILE: a dense checkpoint, a T-Net or a layer-wise network.

    Every mode of W is listed with what it means: the hourglass's (stack, depth, pathway,
    block), or for a network converted with --arch and --family, the pattern's own parts and the
    values they took in the module names; one block per tensor where the conversion made one
    tensor per group of same-shape kernels.

    \b
    Examples:
      tcompress info hg.pth
      tcompress info tnet.pt --json
      tcompress info resnet-tnet.pt --arch mymodels:resnet
      tcompress info resnet.pth --arch mymodels:resnet --family 'layer{stage}.{block}.conv{conv}'
    """
    from tcompress.cli.render import print_json, print_summary, stdout
    from tcompress.describe import describe

    description = describe(file, arch=arch, family=family)
    if as_json:
        print_json(description)
        return
    console = stdout()
    console.print(f"[bold]{description['file']}[/bold]  sha256 {description['sha256'][:16]}...")
    architecture = description["architecture"]
    if "config" in architecture:
        cfg = architecture["config"]
        console.print(
            f"architecture: {architecture['name']}("
            + ", ".join(f"{k}={v}" for k, v in cfg.items())
            + ")"
        )
    else:
        console.print(
            f"architecture: built by {architecture.get('factory')}, kernels "
            f"{architecture.get('pattern')!r}"
        )
    if description["kind"] == "dense":
        groups = description["groups"]
        if len(groups) == 1:
            shape = " x ".join(map(str, description["mode_sizes"]))
            modes = ",".join(description["mode_names"])
            console.print(
                f"dense checkpoint: {description['params']:,} parameters; "
                f"{description['block_convs']} block convolutions form W of shape {shape} "
                f"({modes}; {description['tensor_params']:,} entries)"
            )
        else:
            console.print(
                f"dense checkpoint: {description['params']:,} parameters; "
                f"{description['block_convs']} block convolutions form {len(groups)} tensors "
                f"({description['tensor_params']:,} entries):"
            )
            for g in groups:
                shape = " x ".join(map(str, g["mode_sizes"]))
                modes = ",".join(g["mode_names"])
                console.print(
                    f"  {g['name']}: {g['members']} kernels, {shape} ({modes}), "
                    f"{g['tensor_params']:,} entries"
                )
        for kept in description["left_out"]:
            console.print(f"left dense: {kept}")
        return
    if description["kind"] == "layerwise":
        console.print(f"layer-wise network saved by tcompress {description['tcompress_version']}")
    else:
        console.print(
            f"T-Net saved by tcompress {description['tcompress_version']}, "
            f"default forward form: {description['forward']}"
        )
    source = description["summary"].get("source")
    if source:
        console.print(
            f"converted from {source} (sha256 {description['summary']['source_sha256'][:16]}...)"
        )
    print_summary(console, description["summary"], architecture=architecture)
