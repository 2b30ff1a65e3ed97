"""Evaluate a model file (dense hourglass, T-Net or ONNX) on a labelled data set: PCKh@0.5.

On MPII-style data the predictions are mapped back through the crop and scored in source-image
pixels by MPII's own rules (:mod:`tcompress.evaluation.mpii`); on synthetic data they are scored
in the crop, with the head size taken from the head joints."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tcompress.data.mpii import MPIIDataset, SourceTruth
from tcompress.errors import BenchError, EvaluationError, param
from tcompress.evaluation.decode import predict
from tcompress.evaluation.mpii import official_pckh, read_mpii_mat, to_source, write_preds_mat
from tcompress.evaluation.pck import PCKAccumulator, PCKResult
from tcompress.layouts import refuse_custom
from tcompress.models.io import ModelIO

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """PCKh of one model on one data set, and what was evaluated.

    ``rules`` is ``"mpii"`` (source pixels, MPII's evaluation) or ``"crop"`` (synthetic data);
    ``head_sizes`` says where the head sizes came from; under MPII's rules ``result_at_0_1`` is
    PCKh@0.1 and ``predictions`` the (N, 16, 2) predictions in source pixels, in split order.
    """

    model: str
    kind: str  # "dense", "tnet", "layerwise" or "onnx"
    data: str
    split: str
    image_size: int
    flip: bool
    result: PCKResult
    rules: str = "crop"
    head_sizes: str = "head joints"
    result_at_0_1: PCKResult | None = None
    predictions: np.ndarray | None = field(default=None, repr=False)
    preds_mat: str | None = None  # the .mat file the predictions were written to

    def to_dict(self) -> dict:
        hidden = ("result", "result_at_0_1", "predictions", "preds_mat")
        out = {k: v for k, v in self.__dict__.items() if k not in hidden}
        out["pckh"] = self.result.to_dict()
        if self.result_at_0_1 is not None:
            out["pckh_at_0_1"] = self.result_at_0_1.to_dict()
        if self.preds_mat is not None:
            out["preds_mat"] = self.preds_mat
        return out


class OnnxModel:
    """An ONNX file as a callable on channels-first image batches (ONNX Runtime, CPU), returning
    the list of per-stack heatmaps (N, J, h, w) like the PyTorch models.

    A channels-last file (a PoseNet's, input (N, H, W, C)) is given the images permuted, and a
    single stacked output (N, stacks, J, h, w) is split into its stacks. The layout is the one
    the file's metadata names, else it is read off the input's shape against ``channels``, the
    images' channels (:func:`tcompress.export.bench.input_layout`). An INT8 file with 8-bit
    weights on a CPU that saturates their products
    (:func:`tcompress.export.quantize.saturating_cpu`) logs a warning unless ``warn`` is False.
    """

    def __init__(
        self, path: str, threads: int | None = None, channels: int = 3, *, warn: bool = True
    ) -> None:
        import onnxruntime as ort

        from tcompress.export.bench import LAYOUTS, PIXEL_MEAN_KEY, PIXEL_STD_KEY, input_layout

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:
            reason = str(e).splitlines()[0]
            raise EvaluationError(f"ONNX file '{path}' cannot be loaded: {reason}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            shapes = ", ".join(str(tuple(i.shape)) for i in inputs) or "none"
            raise EvaluationError(
                f"ONNX file '{path}' has inputs of shapes {shapes}; expected one image input, "
                "(N, C, H, W) or (N, H, W, C)"
            )
        self.input_name = inputs[0].name
        # A half-precision file without float32 inputs and outputs is fed and read in float16.
        self.input_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self.path = path
        shape = inputs[0].shape
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.layout = input_layout(shape, metadata, channels, where=f"ONNX file '{path}'")
        c, h, _ = LAYOUTS[self.layout]
        self.channels = shape[c] if isinstance(shape[c], int) else None
        self.image_size = shape[h] if isinstance(shape[h], int) else None
        self.io = ModelIO(
            self.channels or channels,
            ("heatmaps",),
            pixel_mean=_floats(metadata, PIXEL_MEAN_KEY, path),
            pixel_std=_floats(metadata, PIXEL_STD_KEY, path),
        )
        #: The CPU, when it saturates this INT8 file's 8-bit products (else None).
        self.saturating_cpu = _saturating(metadata)
        if self.saturating_cpu and warn:
            log.warning(
                "ONNX file '%s' has 8-bit INT8 weights, and this CPU (%s) adds pairs of their "
                "products in 16 bits, which can saturate: its scores here can be far below "
                "those on CPUs with VNNI or on ARM; for this CPU, export with 7-bit weights "
                "(tcompress export's default, without --full-range)",
                path,
                self.saturating_cpu,
            )

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Heatmaps of channels-first ``images`` (N, C, H, W), one (N, J, h, w) per stack."""
        fits = images.dim() == 4 and self.channels in (None, images.shape[1])
        if not fits:
            raise EvaluationError(
                f"images have shape {tuple(images.shape)}; ONNX file '{self.path}' expects "
                f"(N, {self.channels or 'C'}, H, W) images"
            )
        x = self.io.adapt(images)
        x = x.permute(0, 2, 3, 1) if self.layout == "NHWC" else x
        feed = x.float().cpu().contiguous().numpy().astype(self.input_dtype, copy=False)
        outputs = self.session.run(None, {self.input_name: feed})
        heatmaps = []
        for out in (torch.from_numpy(o).float() for o in outputs):
            heatmaps.extend(out.unbind(1) if out.dim() == 5 else [out])
        return heatmaps


def _saturating(metadata: dict) -> str | None:
    """The CPU (:func:`tcompress.export.quantize.saturating_cpu`) when a file tcompress quantized
    with 8-bit weights runs on one that saturates their products; None otherwise."""
    from tcompress.export.quantize import QUANTIZATION_KEY, saturating_cpu

    try:
        settings = json.loads(metadata[QUANTIZATION_KEY])
    except (KeyError, ValueError):
        return None
    if not isinstance(settings, dict) or settings.get("reduce_range", True):
        return None
    return saturating_cpu()


def _floats(metadata: dict, key: str, path: str) -> tuple[float, ...] | None:
    """A comma-separated metadata entry as numbers (None when absent), as
    :func:`tcompress.export.bench.metadata_floats` reads it, its error an EvaluationError."""
    from tcompress.export.bench import metadata_floats

    try:
        return metadata_floats(metadata, key, f"ONNX file '{path}'")
    except BenchError as e:
        raise EvaluationError(str(e)) from None


def load_for_evaluation(path: str | os.PathLike) -> nn.Module | OnnxModel:
    """The model in a dense checkpoint, a T-Net file or an ONNX file (``.onnx``, or ONNX
    Runtime's mobile format ``.ort``)."""
    path = os.fspath(path)
    if path.endswith((".onnx", ".ort")):
        if not os.path.exists(path):
            raise EvaluationError(f"ONNX file '{path}' does not exist")
        return OnnxModel(path)
    from tcompress.serialize import load

    return load(path)


def model_kind(model: nn.Module | OnnxModel) -> str:
    """``"onnx"``, ``"tnet"``, ``"layerwise"`` or ``"dense"``."""
    from tcompress.layerwise import LayerwiseNet
    from tcompress.tnet import TNet

    if isinstance(model, OnnxModel):
        return "onnx"
    if isinstance(model, LayerwiseNet):
        return "layerwise"
    return "tnet" if isinstance(model, TNet) else "dense"


def evaluate(
    model: str | os.PathLike | nn.Module,
    data: str | os.PathLike = "synthetic",
    *,
    split: str | None = None,
    n: int | None = None,
    image_size: int | None = None,
    batch_size: int = 16,
    flip: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    images: str | os.PathLike | None = None,
    mpii_mat: str | os.PathLike | None = None,
    preds_mat: str | os.PathLike | None = None,
    force: bool = False,
) -> Evaluation:
    """PCKh@0.5 of ``model`` on ``data`` (``"synthetic"`` or a path :func:`make_dataset` reads):
    the whole of ``tcompress evaluate``, whose ``--json`` is the result's ``to_dict()``.

    On MPII-style data the predictions are mapped back to the source images and scored by MPII's
    own rules (``rules == "mpii"``); on synthetic data joints are scored in the crop.

    Parameters
    ----------
    model
        A module, an :class:`OnnxModel`, or a dense checkpoint, T-Net or ``.onnx`` file.
    split
        ``"train"``, ``"val"`` (the split for choices) or ``"test"`` (for reported figures; on
        MPII-style data the official validation entries); default: ``"val"`` on synthetic data,
        ``"test"`` on MPII-style data (the entries its published PCKh figures use).
    image_size
        Input size; default: the ONNX file's own, else 256. Heatmaps are a quarter of it.
    progress
        Called with (batches done, batches in all): ``(0, total)`` once the model is loaded and
        the data set built, then after every batch.
    images
        MPII data: the folder the annotations' image paths are relative to (see
        :func:`~tcompress.data.make_dataset`).
    mpii_mat
        MPII's validation entries (the test split): a ``detections_our_format.mat``-style file
        whose ground truth and head boxes are scored against
        (:func:`~tcompress.evaluation.mpii.read_mpii_mat`); its people must be the split's, in
        order.
    preds_mat, force
        MPII data: also write the predictions (source-image pixels) to this ``.mat`` file
        (:func:`~tcompress.evaluation.mpii.write_preds_mat`), atomically; an existing file only
        with ``force``. Checked before anything is evaluated.

    Raises
    ------
    TcompressError
        For a model, data set or option that cannot be evaluated (before any prediction is
        made), naming the parameter.
    """
    from tcompress.checkpoint import check_output
    from tcompress.data import make_dataset

    paths = () if isinstance(model, nn.Module | OnnxModel) else (model,)
    if preds_mat is not None:
        check_output(preds_mat, force=force, inputs=paths)
    if isinstance(model, nn.Module | OnnxModel):
        name = getattr(model, "path", "model")
    else:
        name = os.fspath(model)
        model = load_for_evaluation(model)
    refuse_custom(model, "tcompress.evaluate scores pose heatmaps (PCKh@0.5 on joints) and")
    kind = model_kind(model)
    if image_size is None:
        image_size = getattr(model, "image_size", None) or 256
    if isinstance(model, nn.Module):
        model = model.to(device)
    heatmap_size = image_size // 4
    if split is None:
        split = "val" if str(data) == "synthetic" else "test"
    dataset = make_dataset(data, split, image_size, heatmap_size, n=n, seed=seed, images=images)
    source = _mpii_of(dataset)
    if mpii_mat is not None and source is None:
        raise EvaluationError(
            f"a ground-truth .mat file was given for data '{os.fspath(data)}', which is not an "
            "MPII-style annotation set; expected MPII data"
        )
    if preds_mat is not None and source is None:
        raise EvaluationError(
            f"{param('preds_mat')} writes MPII predictions; data '{os.fspath(data)}' is not an "
            "MPII-style set"
        )
    if source is not None:  # the ground truth is checked before any prediction is made
        truth, head_sizes = _truth(*source, mpii_mat, split)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if progress:
        progress(0, len(loader))
    accumulator = PCKAccumulator(threshold=0.5)
    predictions = []
    for done, batch in enumerate(loader, 1):
        if "joints" not in batch:
            raise EvaluationError(
                f"data '{os.fspath(data)}' has no joint labels; evaluation needs a labelled set"
            )
        inputs = batch["image"].to(device) if kind != "onnx" else batch["image"]
        coords, _ = predict(model, inputs, flip=flip)
        joints = batch["joints"].shape[1]
        if coords.shape[1] != joints:
            raise EvaluationError(
                f"model '{name}' predicts {coords.shape[1]} joints; data '{os.fspath(data)}' "
                f"has {joints}; expected a model of the data set's joints"
            )
        if source is None:
            accumulator.update(coords.cpu(), batch["joints"], batch["visible"], batch["head_size"])
        else:
            predictions.append(to_source(coords, batch["matrix"], image_size, heatmap_size))
        if progress:
            progress(done, len(loader))
    report = Evaluation(name, kind, os.fspath(data), split, image_size, flip, None)
    if source is None:
        report.result = accumulator.all_reduce().result()
        return report
    report.head_sizes = head_sizes
    report.predictions = torch.cat(predictions).numpy() if predictions else np.zeros((0, 16, 2))
    report.result = official_pckh(report.predictions, truth)
    report.result_at_0_1 = official_pckh(report.predictions, truth, threshold=0.1)
    report.rules = "mpii"
    if preds_mat is not None:
        out = check_output(preds_mat, force=force, inputs=paths)
        write_preds_mat(out, report.predictions, force=force)
        report.preds_mat = os.fspath(preds_mat)
    return report


def _mpii_of(dataset) -> tuple[MPIIDataset, int] | None:
    """The MPII data set behind ``dataset`` (itself or the first-n ``Subset`` of it) and the
    number of its people evaluated."""
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    return (base, len(dataset)) if isinstance(base, MPIIDataset) else None


def _truth(dataset: MPIIDataset, count: int, mpii_mat, split: str) -> tuple[SourceTruth, str]:
    """Ground truth of the first ``count`` people, and where their head sizes come from."""
    own = dataset.truth()
    if mpii_mat is None:
        boxes = int(own.has_box[:count].sum())
        where = (
            "head boxes of the annotations"
            if boxes == count
            else f"estimated from the head joints ({count - boxes} of {count} people have no "
            "head box)"
        )
        return own.rows(slice(count)), where
    if split != "test":
        raise EvaluationError(
            "a ground-truth .mat file holds MPII's validation entries, the test split; got "
            f"split {split!r}"
        )
    truth = read_mpii_mat(mpii_mat)
    if len(truth.joints) != len(own.joints):
        raise EvaluationError(
            f"'{os.fspath(mpii_mat)}' holds {len(truth.joints)} people; the validation split "
            f"has {len(own.joints)}; expected the same people in the same order"
        )
    both = own.labelled & truth.labelled
    if both.any():
        gap = np.linalg.norm(own.joints - truth.joints, axis=-1) / truth.head_sizes[:, None]
        if float(np.median(gap[both])) > 0.5:
            raise EvaluationError(
                f"the joints of '{os.fspath(mpii_mat)}' lie {float(np.median(gap[both])):.1f} "
                "head sizes (median) from the annotations' validation entries; expected the same "
                "people in the same order"
            )
    return truth.rows(slice(count)), f"head boxes of {os.fspath(mpii_mat)}"


def pckh_of(
    model: nn.Module | OnnxModel,
    data: torch.utils.data.Dataset,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    flip: bool = False,
    keep_samples: bool = False,
) -> PCKAccumulator:
    """The :class:`PCKAccumulator` (PCKh@0.5) of ``model`` over every sample of ``data``, in
    order, scored in the crop: heatmap pixels, each sample's own ``head_size``.

    The loop every experiment runs; unlike :func:`evaluate` it applies no MPII source-pixel
    rules and does not sum over ``torch.distributed`` ranks (call ``all_reduce()`` on the result
    for that).

    Parameters
    ----------
    device
        Where the images go; default: the device of the model's parameters (the CPU for an
        :class:`OnnxModel`).
    flip
        Flip testing, as in :func:`~tcompress.evaluation.decode.predict`.
    keep_samples
        Also keep every sample's hits and visible counts (``sample_hits``, ``sample_counts``),
        for bootstrap intervals.
    """
    if device is None:
        device = next(model.parameters()).device if isinstance(model, nn.Module) else "cpu"
    accumulator = PCKAccumulator(threshold=0.5, keep_samples=keep_samples)
    for batch in torch.utils.data.DataLoader(data, batch_size=batch_size):
        coords, _ = predict(model, batch["image"].to(device), flip=flip)
        accumulator.update(coords.cpu(), batch["joints"], batch["visible"], batch["head_size"])
    return accumulator
