"""What a network takes and gives: channel order and pixel scale of its input, number and layout
of its outputs.

Export, validation, fine-tuning and evaluation call networks through :func:`heatmaps_of`, so that
a network keeps its own conventions (a channels-last input, its own pixel normalisation, heatmaps
stacked into one tensor) while the rest of tcompress sees channels-first images normalised with
:data:`tcompress.data.MEAN` / :data:`~tcompress.data.STD` and a list of per-stack heatmaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tcompress.errors import TcompressError


@dataclass(frozen=True)
class ModelIO:
    """Input and output conventions of a network.

    Parameters
    ----------
    in_channels
        Channels of the input image.
    output_names
        Names of the outputs in an exported graph, in the order the network returns them.
    channels_last
        The input is (N, H, W, C) instead of (N, C, H, W).
    stacked_output
        The network returns one tensor (N, stacks, joints, h, w) instead of a list of
        (N, joints, h, w).
    size_multiple
        Input height and width must be multiples of this.
    pixel_mean, pixel_std
        The network takes ``(pixel - pixel_mean) / pixel_std`` per channel, pixels in [0, 1], as
        the code that trained it fed them; None: tcompress's own normalisation
        (:data:`tcompress.data.MEAN`, :data:`~tcompress.data.STD`).
    """

    in_channels: int
    output_names: tuple[str, ...]
    channels_last: bool = False
    stacked_output: bool = False
    size_multiple: int = 1
    pixel_mean: tuple[float, ...] | None = None
    pixel_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("in_channels", "size_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TcompressError(f"{name} must be a positive integer, got {value!r}")
        if not self.output_names:
            raise TcompressError("output_names is empty; expected at least one output name")
        if (self.pixel_mean is None) != (self.pixel_std is None):
            raise TcompressError("pixel_mean and pixel_std are given together or not at all")
        for name in ("pixel_mean", "pixel_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.in_channels:
                raise TcompressError(
                    f"{name} has {len(value)} values; expected one per input channel "
                    f"({self.in_channels})"
                )
        if self.pixel_std is not None and not all(v > 0 for v in self.pixel_std):
            raise TcompressError(f"pixel_std {self.pixel_std}; expected positive values")

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """Channels-first images in tcompress's normalisation -> the network's own input
        (its pixel normalisation and layout)."""
        if self.pixel_mean is not None:
            from tcompress.data.transforms import MEAN, STD

            # x = (p - MEAN) / STD  ->  (p - pixel_mean) / pixel_std, as one multiply-add
            scale = torch.tensor([s / t for s, t in zip(STD, self.pixel_std)], dtype=images.dtype)
            shift = torch.tensor(
                [(m - n) / t for m, n, t in zip(MEAN, self.pixel_mean, self.pixel_std)],
                dtype=images.dtype,
            )
            images = (
                images * scale.to(images.device)[:, None, None]
                + shift.to(images.device)[:, None, None]
            )
        return images.permute(0, 2, 3, 1) if self.channels_last else images

    def example(
        self, batch: int, size: tuple[int, int], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A standard normal input in the network's own layout."""
        shape = (batch, *size, self.in_channels) if self.channels_last else None
        shape = shape or (batch, self.in_channels, *size)
        return torch.randn(*shape, generator=generator)


class WrapsNetwork:
    """Marks a module that runs a network it holds as ``net`` (T-Nets and layer-wise networks):
    :func:`unwrap` looks through it, so that the network's own conventions still apply."""

    net: nn.Module


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel / DataParallel wrappers, T-Nets and layer-wise
    networks (:class:`WrapsNetwork`)."""
    while True:
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(model, WrapsNetwork):
            model = model.net
        else:
            return model


def model_io(model: nn.Module) -> ModelIO:
    """The :class:`ModelIO` of ``model`` (its ``io`` attribute; for a network without one, a
    channels-first input with the first convolution's input channels and one output)."""
    inner = unwrap(model)
    io = getattr(inner, "io", None)
    if isinstance(io, ModelIO):
        return io
    for module in inner.modules():
        channels = getattr(module, "in_channels", None)
        if isinstance(module, nn.Conv2d) or (isinstance(channels, int) and module is not inner):
            return ModelIO(int(channels), ("output",))
    raise TcompressError(
        f"model is a {type(inner).__name__} without convolutions; expected a convolutional network"
    )


def heatmaps_of(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Run ``model`` on channels-first ``images``; its outputs as a list of (N, J, h, w).

    A network without an ``io`` attribute is called as it is (channels first; a list of
    heatmaps, or one tensor taken as the only stack)."""
    io = getattr(unwrap(model), "io", None)
    out = model(io.adapt(images) if isinstance(io, ModelIO) else images)
    if isinstance(io, ModelIO) and io.stacked_output:
        return list(out.unbind(1))
    return list(out) if isinstance(out, list | tuple) else [out]
