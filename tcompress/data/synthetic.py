"""Procedural pose data: articulated figures in MPII joint order over cluttered backgrounds.

A sample is generated from its own generator, derived from ``(seed, split, index, epoch)`` only,
so it does not depend on access order or worker count, and the splits never share a sample.

Scene: a textured background (gradients, smooth and fine noise, stripes), distractor shapes
(blobs, boxes, limb-like chains), sometimes a second figure, then the labelled figure (shaded
capsule limbs with clothing and skin colours; a face marks a figure seen from the front, so left
and right can be told apart), random occluders, lighting, colour jitter, blur and noise.
Joints outside the image or under an occluder are invisible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from tcompress.data import render
from tcompress.data.figure import render_pose, sample_figure, unit
from tcompress.data.skeleton import head_size
from tcompress.data.targets import gaussian_heatmaps
from tcompress.data.transforms import (
    flip_joints,
    image_to_heatmap,
    normalize,
    sample_rng,
)
from tcompress.errors import DataError
from tcompress.vocabulary import SPLITS

__all__ = ["Scene", "SyntheticConfig", "SyntheticPose", "render_scene"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Difficulty knobs of :class:`SyntheticPose`; sizes are fractions of the image side."""

    figure_size: tuple[float, float] = (0.5, 0.95)  # largest joint-box side
    center_jitter: float = 0.08  # std of the figure centre offset
    rotation_std: float = 25.0  # degrees, clipped at 2.5 std
    distractors: tuple[int, int] = (4, 12)
    second_figure: float = 0.35  # probability of an unlabelled figure nearby
    occlusion: float = 0.4  # probability of 1-2 occluders over the figure
    blur: float = 0.5  # probability of a Gaussian blur
    noise: float = 0.06  # largest additive noise std


@dataclass
class Scene:
    """A rendered sample before normalisation; ``joints`` in image pixels."""

    image: np.ndarray  # (3, H, W) in [0, 1]
    joints: np.ndarray  # (16, 2)
    visible: np.ndarray  # (16,)
    figure_mask: np.ndarray  # (H, W) coverage of the labelled figure, occluders removed
    occluder_mask: np.ndarray  # (H, W)


def _ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """Linear ramp from 0 to 1 across the image, random direction. Shapes: (size, size)."""
    u = unit(rng.uniform(0, 2 * math.pi)).astype(np.float32)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    ramp = coords[None, :] * u[0] + coords[:, None] * u[1]
    return (ramp - min(u[0], 0) - min(u[1], 0)) / (abs(u[0]) + abs(u[1]))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient + smooth noise + fine noise, sometimes stripes. Shapes: return (3, size, size)."""
    cells = int(rng.integers(3, 9))  # gradient and smooth noise: both on one coarse grid
    c0, c1 = rng.uniform(0.05, 0.95, (2, 3, 1, 1)).astype(np.float32)
    grid = c0 + _ramp(rng, cells) * (c1 - c0)
    grid += rng.uniform(0.1, 0.5) * (rng.random(grid.shape, dtype=np.float32) - 0.5)
    canvas = render.upsample(grid, size)
    fine = render.value_noise(rng, size, max(size // int(rng.integers(2, 8)), 2), 1)
    fine -= 0.5
    canvas += np.float32(rng.uniform(0.0, 0.25)) * fine
    if rng.random() < 0.3:
        stripes = np.sin(_ramp(rng, size) * np.float32(rng.uniform(10, 40)))
        canvas += stripes * rng.uniform(-0.15, 0.15, (3, 1, 1)).astype(np.float32)
    return canvas


def _distractors(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    """Blobs, boxes and limb-like capsule chains, partly outside the image."""
    size, shape = canvas.shape[-1], canvas.shape
    for _ in range(count):
        at = rng.uniform(-0.1, 1.1, 2) * size
        r = rng.uniform(0.02, 0.2) * size
        colour, kind = rng.uniform(0, 1, 3), rng.integers(4)
        if kind >= 2:  # limb-like chain of capsules
            angle, width = rng.uniform(0, 2 * math.pi), rng.uniform(0.015, 0.04) * size
            for _ in range(int(rng.integers(1, 4))):
                end = at + rng.uniform(0.08, 0.2) * size * unit(angle)
                render.paint(
                    canvas, render.capsule(shape, at, end, width, 0.85 * width), colour, 0.4
                )
                at, angle, width = end, angle + rng.uniform(-1.5, 1.5), width * 0.85
            continue
        draw = render.ellipse if kind == 0 else render.rectangle
        cover = draw(shape, at, r, r * rng.uniform(0.2, 1), rng.uniform(0, math.pi))
        render.paint(canvas, cover, colour, rng.uniform(0, 0.5))


def _occluders(
    rng: np.random.Generator, canvas: np.ndarray, joints: np.ndarray, texture: np.ndarray
) -> np.ndarray:
    """One or two textured boxes or blobs over random joints; returns their coverage (H, W).

    ``texture`` (H, W) in [-0.5, 0.5] modulates their colours.
    """
    size = canvas.shape[-1]
    mask = np.zeros(canvas.shape[-2:], np.float32)
    for _ in range(int(rng.integers(1, 3))):
        at = joints[rng.integers(len(joints))] + rng.normal(0, 0.05 * size, 2)
        r = rng.uniform(0.06, 0.18) * size
        draw = render.rectangle if rng.random() < 0.5 else render.ellipse
        cover = draw(canvas.shape, at, r, r * rng.uniform(0.3, 1.0), rng.uniform(0, math.pi))
        colour = rng.uniform(0, 1, (3, 1, 1)).astype(np.float32)
        render.paint(canvas, cover, colour * (1 + np.float32(rng.uniform(0.2, 0.8)) * texture))
        if cover is not None:
            np.maximum(mask[cover[0], cover[1]], cover[2], out=mask[cover[0], cover[1]])
    return mask


def render_scene(
    rng: np.random.Generator, image_size: int, config: SyntheticConfig | None = None
) -> Scene:
    """One full sample: background, clutter, figure, occluders and degradations."""
    config = config or SyntheticConfig()
    size = image_size
    canvas = _background(rng, size)
    _distractors(rng, canvas, int(rng.integers(config.distractors[0], config.distractors[1] + 1)))
    if rng.random() < config.second_figure:  # an unlabelled person nearby, partly in view
        other = sample_figure(rng, size, config.figure_size, config.rotation_std)
        shift = unit(rng.uniform(0, 2 * math.pi)) * rng.uniform(0.45, 0.7) * size
        zoom = rng.uniform(0.5, 1.0)
        other.joints = (other.joints - size / 2) * zoom + size / 2 + shift
        other.torso *= zoom
        render_pose(canvas, other)
    figure = sample_figure(rng, size, config.figure_size, config.rotation_std, config.center_jitter)
    figure_mask = np.zeros((size, size), np.float32)
    render_pose(canvas, figure, figure_mask)
    occluder_mask = np.zeros_like(figure_mask)
    if rng.random() < config.occlusion:
        texture = render.value_noise(rng, size, int(rng.integers(4, 24)), 1)[0] - 0.5
        occluder_mask = _occluders(rng, canvas, figure.joints, texture)
    # Lighting ramp and colour jitter, blur, then sensor noise and a brightness shift.
    light = 1 + np.float32(rng.uniform(-0.3, 0.3)) * (2 * _ramp(rng, size) - 1)
    canvas *= rng.uniform(0.7, 1.2, (3, 1, 1)).astype(np.float32)
    canvas *= light
    if rng.random() < config.blur:
        canvas = render.blur(canvas, rng.uniform(0.3, 1.5) * size / 256)
    noise = rng.random(canvas.shape, dtype=np.float32)
    amplitude = rng.uniform(0, config.noise) * math.sqrt(12)  # uniform noise of std <= noise
    noise *= np.float32(amplitude)
    noise += np.float32(rng.uniform(-0.1, 0.1) - amplitude / 2)
    canvas += noise
    inside = ((figure.joints > -0.5) & (figure.joints < size - 0.5)).all(1)
    pixel = np.clip(np.round(figure.joints), 0, size - 1).astype(int)
    occluded = occluder_mask[pixel[:, 1], pixel[:, 0]] >= 0.5
    return Scene(
        np.clip(canvas, 0, 1, out=canvas),
        figure.joints.astype(np.float32),
        (inside & ~occluded).astype(np.float32),
        figure_mask * (1 - occluder_mask),
        occluder_mask,
    )


class SyntheticPose(Dataset):
    """Procedural articulated-figure pose data in the MPII joint set.

    Parameters
    ----------
    n : int
        Number of samples (any size: samples are generated on demand).
    image_size, heatmap_size : int
        Sides of the square input image and of the target heatmaps.
    seed : int
        Data set seed; the same (seed, split, index, epoch) always gives the same sample.
    split : {"train", "val", "test"}
        The splits draw from disjoint generator keys: no sample is in two of them.
    augment : bool, optional
        Random horizontal flip, left and right joints swapped; default True for "train" only.
        Photometric variation (colour, lighting, blur, noise) is part of generation
        in both splits.
    sigma : float, optional
        Heatmap Gaussian std in heatmap pixels (:func:`~tcompress.data.targets.default_sigma`).
    config : SyntheticConfig, optional
        Difficulty knobs.

    Shapes
    ------
    image : (3, image_size, image_size) float32, normalised with ``MEAN`` / ``STD``
    heatmaps : (16, heatmap_size, heatmap_size) float32
    joints : (16, 2) float32, (x, y) in heatmap pixels
    visible : (16,) float32, 1 inside the image and not occluded
    head_size : () float32, heatmap pixels (:func:`~tcompress.data.skeleton.head_size`)
    index : int
    """

    def __init__(
        self,
        n: int,
        image_size: int = 256,
        heatmap_size: int = 64,
        seed: int = 0,
        split: str = "train",
        augment: bool | None = None,
        sigma: float | None = None,
        config: SyntheticConfig | None = None,
    ) -> None:
        for name, value, low in (
            ("n", n, 0),
            ("image_size", image_size, 1),
            ("heatmap_size", heatmap_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"{name} must be an integer >= {low}, got {value!r}")
        if split not in SPLITS:
            raise DataError(f"split {split!r} is not one of {SPLITS}")
        self.n, self.image_size, self.heatmap_size = n, image_size, heatmap_size
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise DataError(f"seed must be an integer, got {seed!r}")
        self.seed, self.split, self.sigma = int(seed), split, sigma
        self.augment = split == "train" if augment is None else bool(augment)
        self.config = config or SyntheticConfig()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make every index draw a fresh sample for this epoch (epoch 0 is the default)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Scene:
        """The rendered sample ``index`` (before normalisation), with its masks."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for a data set of {self.n} samples")
        rng = sample_rng("synthetic", self.seed, self.split, int(index), self.epoch)
        scene = render_scene(rng, self.image_size, self.config)
        if self.augment and rng.random() < 0.5:
            joints, visible = flip_joints(scene.joints, scene.visible, self.image_size)
            scene = Scene(
                scene.image[:, :, ::-1].copy(),
                joints.astype(np.float32),
                visible,
                scene.figure_mask[:, ::-1].copy(),
                scene.occluder_mask[:, ::-1].copy(),
            )
        return scene

    def __getitem__(self, index: int) -> dict:
        scene = self.scene(index)
        image = scene.image
        joints = image_to_heatmap(scene.joints, self.image_size, self.heatmap_size)
        return {
            "image": torch.from_numpy(normalize(image).astype(np.float32, copy=False)),
            "heatmaps": gaussian_heatmaps(joints, scene.visible, self.heatmap_size, self.sigma),
            "joints": torch.as_tensor(joints, dtype=torch.float32),
            "visible": torch.as_tensor(scene.visible, dtype=torch.float32),
            "head_size": torch.tensor(float(head_size(joints)), dtype=torch.float32),
            "index": int(index),
        }
