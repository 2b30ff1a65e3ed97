"""``tcompress export``: a T-Net or a dense hourglass to a validated ONNX file."""

from __future__ import annotations

from pathlib import Path

import click

from tcompress.cli import handle_errors, images_option, main
from tcompress.vocabulary import (
    EXPORT_FORMS,
    EXPORT_PRECISIONS,
    FILE_FORMATS,
    FP32_ATOL,
    FP32_RTOL,
)


@main.command(name="export")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--form",
    type=click.Choice(EXPORT_FORMS),
    default="factorized",
    show_default=True,
    help="factorized: three convolutions per block conv (Tucker), two (MPS); dense: "
    "kernels rebuilt and BatchNorms folded (the fused dense form).",
)
@click.option(
    "--opset", type=click.IntRange(min=13), default=17, show_default=True, help="ONNX opset."
)
@click.option(
    "--input-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Height and width of the traced input; the batch axis stays dynamic.",
)
@click.option(
    "--atol",
    type=click.FloatRange(min=0),
    default=FP32_ATOL,
    show_default=True,
    help="The float32 file passes validation when max |ONNX - PyTorch| <= atol + rtol * "
    "max |PyTorch| (the half-precision and INT8 files have their own checks).",
)
@click.option("--rtol", type=click.FloatRange(min=0), default=FP32_RTOL, show_default=True)
@click.option(
    "--precision",
    type=click.Choice(EXPORT_PRECISIONS),
    default="fp32",
    show_default=True,
    help="fp16: half precision (GPUs); int8: static QDQ quantization calibrated on --calibrate "
    "(CPUs, phones).",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(FILE_FORMATS),
    default="onnx",
    show_default=True,
    help="ort: ONNX Runtime's mobile format (the output ends in .ort).",
)
@click.option("--keep-io-types", is_flag=True, help="fp16: keep float32 inputs and outputs.")
@click.option(
    "--calibrate",
    default=None,
    metavar="DATA",
    help="int8: images the activation ranges are calibrated on ('synthetic', an image folder or "
    "an MPII-style set; labels unused).",
)
@click.option(
    "-n",
    "--calibration-samples",
    type=click.IntRange(min=1),
    default=None,
    help="int8: calibration images [default: 32].",
)
@click.option(
    "--full-range",
    is_flag=True,
    help="int8: 8-bit weights, for x86 CPUs with VNNI and ARM CPUs; x86 CPUs without VNNI can "
    "saturate their products. Default: 7-bit weights, which every CPU runs alike.",
)
@click.option("--no-validate", is_flag=True, help="Skip the ONNX Runtime comparison.")
@click.option(
    "--check",
    default=None,
    metavar="DATA",
    help="Labelled data ('synthetic' or an MPII-style set) on which the file's PCKh@0.5 must stay "
    "within --max-drop points of the PyTorch model's; refused (nothing written) beyond it.",
)
@click.option(
    "--check-samples",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Validation images scored by --check.",
)
@click.option(
    "--max-drop",
    type=float,
    default=None,
    help="Largest PCKh drop (points) --check allows [default: 0.25 for float32].",
)
@images_option
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), required=True, help="Output .onnx file."
)
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.option(
    "--arch",
    default=None,
    metavar="MODULE:FACTORY",
    help="For a T-Net converted with --arch: the factory that builds its network.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@handle_errors(reduce_range="--full-range")
def export(
    file,
    form,
    opset,
    input_size,
    atol,
    rtol,
    precision,
    file_format,
    keep_io_types,
    calibrate,
    calibration_samples,
    full_range,
    no_validate,
    check,
    check_samples,
    max_drop,
    images,
    output,
    force,
    arch,
    as_json,
):
    """Export FILE (a T-Net or an uncompressed hourglass checkpoint) to ONNX.

    The file is checked with onnx.checker and compared with the PyTorch model in ONNX Runtime at
    batch 1 and 3; on any failure the command exits non-zero and writes nothing.

    \b
    Examples:
      tcompress export tnet.pt --form factorized -o tnet.onnx
      tcompress export tnet.pt --form dense -o tnet-dense.onnx
      tcompress export hg.pth --form dense -o hg.onnx       # the uncompressed baseline
      tcompress export tnet.pt --check synthetic -o tnet.onnx  # PCKh against PyTorch too
      tcompress export tnet.pt --precision int8 --calibrate synthetic -n 32 \\
          --check synthetic -o tnet-int8.onnx
      tcompress export tnet.pt --precision int8 --calibrate synthetic --full-range \\
          -o tnet-int8-vnni.onnx               # 8-bit weights: x86 with VNNI, ARM
      tcompress export tnet.pt --precision fp16 -o tnet-fp16.onnx
      tcompress export tnet.pt --format ort -o tnet.ort
      tcompress export tnet.pt --arch mymodels:resnet --input-size 64 -o tnet.onnx
    """
    from tcompress.checkpoint import check_output
    from tcompress.cli.render import (
        print_json,
        quiet_status,
        refuse_custom_network,
        stderr,
        stdout,
        validation_table,
    )
    from tcompress.export.onnx import export_onnx
    from tcompress.serialize import load

    if check is not None:
        refuse_custom_network(
            file,
            "export --check",
            "scores the exported file's pose heatmaps (PCKh@0.5 on joints)",
            "Export it without --check (its outputs are still compared with PyTorch's) and "
            "score the file with your own metric in ONNX Runtime",
        )
    if calibrate is not None or precision == "int8":
        refuse_custom_network(
            file,
            "export --precision int8",
            "calibrates the INT8 ranges on images prepared as the hourglasses expect them (crop, "
            "size, pixel scale), not as your network's own preprocessing does",
            "Export {load} in fp32 and quantize the file with ONNX Runtime's static quantization "
            "(onnxruntime.quantization.quantize_static) on a reader of your own batches",
        )
    out = check_output(output, force=force, inputs=(file,))
    status = quiet_status() if as_json else stderr().status("Loading", spinner="dots")
    with status:
        model = load(file, arch=arch)
        status.update(f"Exporting the {form} form and validating it")
        report = export_onnx(
            model,
            out,
            form,
            opset=opset,
            input_size=input_size,
            atol=atol,
            rtol=rtol,
            validate=not no_validate,
            check=check,
            check_samples=check_samples,
            max_drop=max_drop,
            check_images=images,
            precision=precision,
            format=file_format,
            keep_io_types=keep_io_types,
            calibrate=calibrate,
            calibration_samples=calibration_samples,
            calibration_images=images,
            reduce_range=not full_range,
            force=force,
        )
    if as_json:
        print_json(report.to_dict())
        return
    console = stdout()
    console.print(
        f"[bold]{form}[/bold] form, {precision}, {file_format}, opset {opset}, "
        f"input {input_size}x{input_size}, "
        f"dynamic batch: {report.params:,} parameters, "
        f"{report.file_bytes / 2**20:.2f} MiB"
    )
    if report.validation:
        console.print(validation_table(report.validation.to_dict()))
    else:
        console.print("[yellow]not validated[/yellow] (--no-validate)")
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if report.task:
        t = report.task
        console.print(
            f"task check on {t.images} images of {t.data}: PCKh@0.5 {t.pckh_exported:.2f} "
            f"(PyTorch {t.pckh_pytorch:.2f}, drop {t.drop:.2f}, at most {t.max_drop:g}) "
            "[green]passed[/green]"
        )
    console.print(f"wrote {out}")
