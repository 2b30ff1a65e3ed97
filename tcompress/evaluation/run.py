"""Evaluate a model file (dense hourglass, T-Net or ONNX) on a labelled data set: PCKh@0.5."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from tcompress.evaluation.decode import EvaluationError, predict
from tcompress.evaluation.pck import PCKAccumulator, PCKResult


@dataclass
class Evaluation:
    """PCKh of one model on one data set, and what was evaluated."""

    model: str
    kind: str  # "dense", "tnet", "layerwise" or "onnx"
    data: str
    split: str
    image_size: int
    flip: bool
    result: PCKResult

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "result"}
        out["pckh"] = self.result.to_dict()
        return out


class OnnxModel:
    """An ONNX file as a callable on image batches (ONNX Runtime, CPU), returning the list of
    per-stack heatmaps like the PyTorch models."""

    def __init__(self, path: str, threads: int | None = None) -> None:
        import onnxruntime as ort

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
            raise EvaluationError(f"ONNX file '{path}' must have one (N, C, H, W) image input")
        self.input_name = inputs[0].name
        self.path = path
        height = inputs[0].shape[2]
        self.image_size = height if isinstance(height, int) else None

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.session.run(None, {self.input_name: images.float().cpu().numpy()})
        return [torch.from_numpy(o) for o in outputs]


def load_for_evaluation(path: str | os.PathLike) -> nn.Module | OnnxModel:
    """The model in a dense checkpoint, a T-Net file or an ONNX file."""
    path = os.fspath(path)
    if path.endswith(".onnx"):
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
    split: str = "val",
    n: int | None = None,
    image_size: int | None = None,
    batch_size: int = 16,
    flip: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """PCKh@0.5 of ``model`` on ``data`` (``"synthetic"`` or a path :func:`make_dataset` reads).

    Parameters
    ----------
    model
        A module, an :class:`OnnxModel`, or a dense checkpoint, T-Net or ``.onnx`` file.
    image_size
        Input size; default: the ONNX file's own, else 256. Heatmaps are a quarter of it.
    progress
        Called with (batches done, batches in all).
    """
    from tcompress.data import make_dataset

    if isinstance(model, nn.Module | OnnxModel):
        name = getattr(model, "path", "model")
    else:
        name = os.fspath(model)
        model = load_for_evaluation(model)
    kind = model_kind(model)
    if image_size is None:
        image_size = getattr(model, "image_size", None) or 256
    if isinstance(model, nn.Module):
        model = model.to(device)
    dataset = make_dataset(data, split, image_size, image_size // 4, n=n, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    accumulator = PCKAccumulator(threshold=0.5)
    for done, batch in enumerate(loader, 1):
        if "joints" not in batch:
            raise EvaluationError(
                f"data '{os.fspath(data)}' has no joint labels; evaluation needs a labelled set"
            )
        images = batch["image"].to(device) if kind != "onnx" else batch["image"]
        coords, _ = predict(model, images, flip=flip)
        accumulator.update(coords.cpu(), batch["joints"], batch["visible"], batch["head_size"])
        if progress:
            progress(done, len(loader))
    return Evaluation(
        name, kind, os.fspath(data), split, image_size, flip, accumulator.all_reduce().result()
    )
