"""Articulated figures in the MPII joint set: random poses and their rendering as shaded limbs.

Poses are built along the kinematic tree in body units (the pelvis-thorax segment is 0.75-1 unit)
with joint angles within plausible limits, random bone lengths and out-of-plane foreshortening,
then scaled, rotated and placed in the image. A face marks a figure seen from the front (its right
side on the image's left), so that left and right can be told apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tcompress.data import render
from tcompress.data.skeleton import N_JOINTS

__all__ = ["Figure", "render_pose", "sample_figure"]

_LIGHT_SKIN, _DARK_SKIN = np.array([0.96, 0.80, 0.68]), np.array([0.3, 0.2, 0.13])
#: Bones drawn as capsules: (parent, child, radius at parent, radius at child, colour), radii in
#: body units; colour 0 top, 1 sleeve/forearm, 2 trousers (thigh), 3 lower leg, 4 skin.
_BONES = (
    (2, 1, 0.17, 0.12, 2),
    (1, 0, 0.12, 0.08, 3),
    (3, 4, 0.17, 0.12, 2),
    (4, 5, 0.12, 0.08, 3),
    (7, 8, 0.09, 0.08, 4),
    (12, 11, 0.11, 0.09, 0),
    (11, 10, 0.09, 0.07, 1),
    (13, 14, 0.11, 0.09, 0),
    (14, 15, 0.09, 0.07, 1),
)


@dataclass
class Figure:
    """One figure: joints in image pixels, size, appearance and drawing order."""

    joints: np.ndarray  # (16, 2)
    torso: float  # pixels per body unit (the pelvis-thorax segment is 0.75-1 unit)
    colours: np.ndarray = field(  # (6, 3): top, sleeve, trousers, lower legs, skin, hair
        default_factory=lambda: np.array(
            [
                [0.8, 0.2, 0.2],
                [0.8, 0.2, 0.2],
                [0.2, 0.2, 0.7],
                [0.2, 0.2, 0.7],
                [0.9, 0.7, 0.6],
                [0.2, 0.1, 0.05],
            ],
            np.float32,
        )
    )
    front: bool = True  # facing the camera: the person's right side is on the image's left
    yaw: float = 0.0  # radians; narrows shoulders and hips, shifts the face
    arm_front: tuple[bool, bool] = (True, True)  # (right, left) drawn over the torso
    leg_front: tuple[bool, bool] = (False, False)


def unit(angle: float) -> np.ndarray:
    """The unit vector at ``angle`` radians (x right, y down)."""
    return np.array([math.cos(angle), math.sin(angle)])


def sample_figure(
    rng: np.random.Generator,
    image_size: int,
    figure_size: tuple[float, float] = (0.5, 0.95),
    rotation_std: float = 25.0,
    center_jitter: float = 0.08,
) -> Figure:
    """Random pose and appearance: joint angles within plausible limits, random bone lengths,
    foreshortening, facing direction, then scale, rotation and position in the image.

    Parameters
    ----------
    rng : Generator
        Source of randomness.
    image_size : int
        Side of the square image, pixels.
    figure_size : (float, float)
        Range of the joints' bounding-box longer side, as a fraction of ``image_size``.
    rotation_std : float
        Standard deviation of the in-plane rotation, degrees (clipped at 2.5 std).
    center_jitter : float
        Standard deviation of the offset of the figure's centre, fraction of ``image_size``.
    """
    front = bool(rng.random() < 0.6)
    side = -1.0 if front else 1.0  # image direction of the person's right side, upright
    yaw = float(rng.uniform(-1.2, 1.2))
    width = max(abs(math.cos(yaw)), 0.3)

    def bone(lo: float, hi: float) -> float:  # length times out-of-plane foreshortening
        return rng.uniform(lo, hi) * math.cos(rng.uniform(0.0, 1.1))

    j = np.zeros((N_JOINTS, 2))
    up = -math.pi / 2 + rng.normal(0.0, 0.2)
    perp = unit(up + math.pi / 2)
    j[7] = j[6] + rng.uniform(0.75, 1.0) * unit(up)
    hips, shoulders = rng.uniform(0.17, 0.24), rng.uniform(0.3, 0.4)
    j[2], j[3] = j[6] + side * width * hips * perp, j[6] - side * width * hips * perp
    j[12] = j[7] + side * width * shoulders * perp + 0.05 * unit(up + math.pi)
    j[13] = j[7] - side * width * shoulders * perp + 0.05 * unit(up + math.pi)
    neck = up + rng.normal(0.0, 0.2)
    j[8] = j[7] + rng.uniform(0.15, 0.25) * unit(neck)
    j[9] = j[8] + rng.uniform(0.4, 0.5) * unit(neck + rng.normal(0.0, 0.3))
    down = up + math.pi
    for s, (shoulder, elbow, wrist) in ((side, (12, 11, 10)), (-side, (13, 14, 15))):
        a = down - s * rng.uniform(-0.5, 2.9)
        j[elbow] = j[shoulder] + bone(0.55, 0.7) * unit(a)
        j[wrist] = j[elbow] + bone(0.5, 0.65) * unit(a + rng.choice((-1, 1)) * rng.uniform(0, 2.5))
    for s, (hip, knee, ankle) in ((side, (2, 1, 0)), (-side, (3, 4, 5))):
        wide = rng.random() < 0.2
        a = down - s * (rng.uniform(-0.6, 1.8) if wide else rng.uniform(-0.3, 0.6))
        j[knee] = j[hip] + bone(0.8, 1.0) * unit(a)
        bend = rng.uniform(0, 2.2) if rng.random() < 0.25 else rng.uniform(0, 0.8)
        j[ankle] = j[knee] + bone(0.8, 1.0) * unit(a + rng.choice((-1, 1)) * bend)

    theta = math.radians(float(np.clip(rng.normal(0.0, 1.0), -2.5, 2.5)) * rotation_std)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    j = j @ rot.T
    extent = float(np.ptp(j, axis=0).max())
    scale = image_size * rng.uniform(*figure_size) / extent
    center = (j.min(0) + j.max(0)) / 2
    offset = rng.normal(0.0, center_jitter * image_size, 2)
    j = (j - center) * scale + (image_size - 1) / 2 + offset

    skin = _LIGHT_SKIN + rng.uniform() * (_DARK_SKIN - _LIGHT_SKIN)
    top = render.hsv(rng.uniform(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.95))
    trousers = render.hsv(rng.uniform(), rng.uniform(0.0, 0.8), rng.uniform(0.1, 0.8))
    sleeve = top if rng.random() < 0.5 else skin
    lower = trousers if rng.random() < 0.7 else skin
    hair = render.hsv(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.7), rng.uniform(0.05, 0.5))
    colours = np.stack([top, sleeve, trousers, lower, skin, hair]).astype(np.float32)
    colours *= rng.uniform(0.9, 1.1, (6, 1)).astype(np.float32)
    arm_front = (bool(rng.random() < 0.8), bool(rng.random() < 0.8))
    leg_front = (bool(rng.random() < 0.3), bool(rng.random() < 0.3))
    return Figure(j, scale, colours.clip(0, 1), front, yaw, arm_front, leg_front)


def render_pose(canvas: np.ndarray, figure: Figure, mask: np.ndarray | None = None) -> None:
    """Paint ``figure`` into ``canvas`` in place, accumulating its coverage into ``mask``.

    Draw order: back limbs, torso, neck and head, front limbs.

    Shapes
    ------
    canvas : (3, H, W) float32
    mask : (H, W) float32
    """
    j, t, col = figure.joints, figure.torso, figure.colours
    shape = canvas.shape

    def limb(bone: int) -> None:
        a, b, ra, rb, part = _BONES[bone]
        render.paint(
            canvas, render.capsule(shape, j[a], j[b], ra * t, rb * t), col[part], 0.4, mask
        )
        if b in (10, 15):  # hand
            hand = j[b] + 0.06 * t * (j[b] - j[a]) / max(np.hypot(*(j[b] - j[a])), 1e-6)
            render.paint(canvas, render.ellipse(shape, hand, 0.08 * t, 0.08 * t), col[4], 0.3, mask)

    limbs = (
        (0, 1),
        (2, 3),
        (5, 6),
        (7, 8),
    )  # bones of the right leg, left leg, right arm, left arm
    in_front = (*figure.leg_front, *figure.arm_front)
    for bone in [b for bones, f in zip(limbs, in_front) if not f for b in bones]:
        limb(bone)
    w = max(abs(math.cos(figure.yaw)), 0.5) * t
    torso = render.polygon(shape, j[[12, 13, 3, 2]])
    render.paint(canvas, torso, col[0], 0.3, mask)
    render.paint(canvas, render.capsule(shape, j[6], j[7], 0.2 * w, 0.22 * w), col[0], 0.4, mask)
    render.paint(canvas, render.capsule(shape, j[2], j[3], 0.15 * t, 0.15 * t), col[2], 0.3, mask)
    render.paint(canvas, render.capsule(shape, j[12], j[13], 0.1 * t, 0.1 * t), col[0], 0.3, mask)
    limb(4)
    axis = j[9] - j[8]
    length = max(float(np.hypot(*axis)), 0.3 * t)
    angle = math.atan2(axis[1], axis[0])
    centre = j[8] + 0.55 * axis
    head = render.ellipse(shape, centre, 0.5 * length, 0.4 * length, angle)
    render.paint(canvas, head, col[4] if figure.front else col[5], 0.35, mask)
    if figure.front:  # hair cap and a face: eyes and mouth shifted with the yaw
        cap = render.ellipse(shape, j[8] + 0.9 * axis, 0.25 * length, 0.42 * length, angle)
        render.paint(canvas, cap, col[5], 0.2, mask)
        across = np.array([-math.sin(angle), math.cos(angle)]) * 0.4 * length
        shift = centre + math.sin(figure.yaw) * 0.5 * across
        dot = max(0.07 * length, 0.6)
        for at in (shift + 0.1 * axis + 0.4 * across, shift + 0.1 * axis - 0.4 * across):
            render.paint(canvas, render.ellipse(shape, at, dot, dot), col[5] * 0.3)
        mouth = render.ellipse(shape, shift - 0.2 * axis, dot, 2 * dot, angle)
        render.paint(canvas, mouth, np.array([0.5, 0.15, 0.15]) * col[4])
    for bone in [b for bones, f in zip(limbs, in_front) if f for b in bones]:
        limb(bone)
