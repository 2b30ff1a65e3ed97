"""Heatmap decoding, flip testing, predict and PCKh / PCK against hand-made cases."""

import json
import math

import pytest
import torch

from tcompress.errors import TcompressError
from tcompress.evaluation import (
    MPII_FLIP_PAIRS,
    MPII_JOINTS,
    PCKAccumulator,
    bbox_size,
    decode_heatmaps,
    flip_average,
    pck_bbox,
    pckh,
    predict,
)

J = 16
SWAP = [5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10]  # MPII channel under a mirror


def gaussian(h, w, cx, cy, sigma, dtype=torch.float32):
    xs = torch.arange(w, dtype=torch.float64)[None, :]
    ys = torch.arange(h, dtype=torch.float64)[:, None]
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)).to(dtype)


def direction(n, j, seed=0):
    """Unit vectors in random directions, (n, j, 2)."""
    angle = torch.rand(n, j, generator=torch.Generator().manual_seed(seed)) * 2 * math.pi
    return torch.stack((angle.cos(), angle.sin()), dim=-1).double()


def random_batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    joints = torch.rand(n, J, 2, generator=g, dtype=torch.float64) * 64
    head = torch.rand(n, generator=g, dtype=torch.float64) * 10 + 5
    pred = joints + torch.randn(n, J, 2, generator=g, dtype=torch.float64) * 3
    visible = torch.rand(n, J, generator=g) > 0.2
    return pred, joints, visible, head


# ----------------------------------------------------------------------------- decoding


CENTRES = [(10.3, 7.8), (5.5, 9.5), (12.02, 3.97), (7.0, 8.0), (3.74, 11.26)]


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0])
def test_decode_gaussian_sub_pixel(sigma):
    maps = torch.stack([gaussian(16, 20, cx, cy, sigma) for cx, cy in CENTRES])[None]
    truth = torch.tensor(CENTRES, dtype=torch.float64)[None]
    coords, maxvals = decode_heatmaps(maps)
    assert coords.shape == (1, len(CENTRES), 2) and coords.dtype == torch.float32
    assert (coords.double() - truth).abs().max() <= 0.26
    assert torch.allclose(maxvals, maps.flatten(2).amax(-1))
    quad, _ = decode_heatmaps(maps, refine="quadratic")
    assert (quad.double() - truth).abs().max() <= 0.05
    plain, _ = decode_heatmaps(maps, refine=None)
    assert torch.equal(plain, plain.round())
    assert torch.equal(plain, decode_heatmaps(maps, refine="none")[0])


def test_decode_quarter_rule_by_hand():
    maps = torch.zeros(1, 1, 5, 5)
    maps[0, 0, 2, 2] = 1.0
    maps[0, 0, 2, 3] = 0.5  # right neighbour higher: +x
    maps[0, 0, 1, 2] = 0.3  # upper neighbour higher: -y
    coords, maxvals = decode_heatmaps(maps)
    assert coords.tolist() == [[[2.25, 1.75]]] and maxvals.item() == 1.0


def test_decode_border_and_zero_maps_are_finite():
    h, w = 8, 10
    maps = torch.stack(
        [
            torch.zeros(h, w),
            gaussian(h, w, 0.0, 0.0, 1.5),
            gaussian(h, w, w - 1.2, h - 0.7, 1.5),
            gaussian(h, w, -1.4, 3.3, 1.0),  # centre outside: argmax on the left border
            gaussian(h, w, 4.2, 3.6, 1.5) - 2.0,  # all negative, as raw network outputs can be
            torch.full((h, w), 0.5),
        ]
    )[None]
    for refine in ("none", "quarter", "quadratic"):
        coords, maxvals = decode_heatmaps(maps, refine=refine)
        assert torch.isfinite(coords).all() and torch.isfinite(maxvals).all()
        assert coords[0, 0].tolist() == [0.0, 0.0] and maxvals[0, 0] == 0
        assert coords[0, 5].tolist() == [0.0, 0.0]
        assert coords[0, 1].tolist() == [0.0, 0.0]  # no neighbour beyond the corner: no move
        assert coords[0, 2].tolist() == [w - 1, h - 1]
        tol = 0.5 if refine == "none" else 0.26
        assert coords[0, 3, 0] == 0.0 and abs(coords[0, 3, 1] - 3.3) <= tol
        assert (coords[0, 4] - torch.tensor([4.2, 3.6])).abs().max() <= tol


def test_decode_accepts_arrays_and_rejects_bad_input():
    coords, _ = decode_heatmaps(gaussian(6, 6, 2.0, 3.0, 1.0)[None, None].numpy())
    assert coords.tolist() == [[[2.0, 3.0]]]
    with pytest.raises(TcompressError, match="expected \\(N, J, h, w\\)"):
        decode_heatmaps(torch.zeros(2, 6, 6))
    with pytest.raises(TcompressError, match="finite"):
        decode_heatmaps(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(TcompressError, match="refine 'cubic'"):
        decode_heatmaps(torch.zeros(1, 1, 4, 4), refine="cubic")


# ----------------------------------------------------------------------------- flip testing


def test_flip_average_of_a_mirror_symmetric_case_is_exact_without_shift():
    maps = torch.rand(2, J, 16, 12, generator=torch.Generator().manual_seed(0))
    mirrored = maps.flip(-1)[:, SWAP]  # what a mirror-equivariant model gives on flipped images
    assert torch.equal(flip_average(maps, mirrored, MPII_FLIP_PAIRS), maps)
    assert torch.equal(flip_average([maps * 0, maps], [mirrored * 0, mirrored]), maps)
    assert not torch.allclose(flip_average(maps, mirrored, MPII_FLIP_PAIRS, shift=True), maps)


def test_flip_average_swaps_left_and_right_channels():
    h, w, col, row = 8, 10, 2, 5
    flipped = torch.zeros(1, J, h, w)
    flipped[0, 3, row, col] = 1.0  # l_hip seen in the flipped image
    out = flip_average(torch.zeros_like(flipped), flipped, MPII_FLIP_PAIRS)
    assert out[0, 2, row, w - 1 - col] == 0.5  # ... is the r_hip of the original
    assert out.sum() == 0.5
    shifted = flip_average(torch.zeros_like(flipped), flipped, MPII_FLIP_PAIRS, shift=True)
    assert shifted[0, 2, row, w - col] == 0.5 and shifted.sum() == 0.5


def test_flip_shift_corrects_stride_scaled_coordinates():
    # heatmap x = image x / 4: the flipped image's joint lands 0.75 px off after unflipping
    stride, width, u = 4, 64, 25.0
    w = width // stride
    original = gaussian(16, w, u / stride, 6.0, 1.5)[None, None]
    flipped = gaussian(16, w, (width - 1 - u) / stride, 6.0, 1.5)[None, None]
    plain = decode_heatmaps(flip_average(original, flipped, []), refine="quadratic")[0]
    fixed = decode_heatmaps(flip_average(original, flipped, [], shift=True), refine="quadratic")[0]
    assert abs(plain[0, 0, 0] - u / stride) > 0.3
    assert abs(fixed[0, 0, 0] - u / stride) < 0.2


def test_flip_average_rejects_bad_input():
    maps = torch.zeros(1, 4, 6, 6)
    with pytest.raises(TcompressError, match="flip pair"):
        flip_average(maps, maps, MPII_FLIP_PAIRS)  # channel 5 and up do not exist
    with pytest.raises(TcompressError, match="flip pair"):
        flip_average(maps, maps, [(0, 1), (1, 2)])
    with pytest.raises(TcompressError, match="expected the shape"):
        flip_average(maps, torch.zeros(1, 4, 6, 5), [(0, 1)])
    with pytest.raises(TcompressError, match="empty"):
        flip_average([], [], [(0, 1)])


# ----------------------------------------------------------------------------- predict


class Fixed(torch.nn.Module):
    """Returns [zeros, fixed heatmaps] per image, and records its training flag when called."""

    def __init__(self, heatmaps, as_list=True):
        super().__init__()
        self.register_buffer("heatmaps", heatmaps)
        self.inner = torch.nn.BatchNorm2d(1)
        self.as_list = as_list
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, self.inner.training, torch.is_grad_enabled()))
        out = self.heatmaps.expand(x.shape[0], -1, -1, -1)
        return [torch.zeros_like(out), out] if self.as_list else out


def fixed_maps():
    return torch.stack([gaussian(16, 16, 3.3 + k * 0.5, 9.6 - k * 0.3, 1.5) for k in range(J)])


def test_predict_decodes_the_last_stack_and_restores_training_flags():
    model = Fixed(fixed_maps())
    model.train()
    model.inner.eval()  # mixed flags come back as they were
    images = torch.zeros(3, 3, 64, 64)
    coords, maxvals = predict(model, images)
    expected = decode_heatmaps(fixed_maps()[None].expand(3, -1, -1, -1))
    assert torch.equal(coords, expected[0]) and torch.equal(maxvals, expected[1])
    assert model.seen == [(False, False, False)]
    assert model.training and not model.inner.training

    single = Fixed(fixed_maps(), as_list=False).eval()
    quad, _ = predict(single, images, refine="quadratic")
    assert not single.training
    maps = fixed_maps()[None].expand(3, -1, -1, -1)
    assert torch.equal(quad, decode_heatmaps(maps, refine="quadratic")[0])


def test_predict_with_flip_averages_both_passes():
    class Mirror(torch.nn.Module):  # heatmaps = the image itself
        def forward(self, x):
            return [x]

    images = torch.rand(2, J, 8, 8, generator=torch.Generator().manual_seed(3))
    coords, _ = predict(Mirror(), images, flip=True, refine="quadratic")
    averaged = flip_average(images, images.flip(-1), MPII_FLIP_PAIRS)
    assert torch.equal(coords, decode_heatmaps(averaged, refine="quadratic")[0])


def test_predict_restores_flags_when_the_forward_fails():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        predict(model, torch.zeros(1, 3, 8, 8))
    assert model.training
    with pytest.raises(TcompressError, match="images"):
        predict(model, torch.zeros(3, 8, 8))


# ----------------------------------------------------------------------------- PCKh


def shifted(joints, head, factor, seed=0):
    return joints + factor * head[:, None, None] * direction(*joints.shape[:2], seed=seed)


def test_perfect_and_boundary_predictions():
    _, joints, _, head = random_batch(4, seed=1)
    visible = torch.ones(4, J, dtype=torch.bool)
    for pred, score in [(joints, 100.0), (shifted(joints, head, 0.4), 100.0)]:
        result = pckh(pred, joints, visible, head)
        assert result.per_joint == (score,) * J and result.mean == score
        assert result.mean_joints == score and set(result.groups.values()) == {score}
    result = pckh(shifted(joints, head, 0.6), joints, visible, head)
    assert result.per_joint == (0.0,) * J and result.mean == 0.0
    assert result.counts == (4,) * J and result.hits == (0,) * J and result.n_samples == 4


def mixed_case():
    """Sample 0 (head 10): joints 0-7 off by 4 px (hit), 8-15 by 6 px (miss).
    Sample 1 (head 20): all off by 8 px (hit) but head_top by 12 px (miss); r_ankle invisible."""
    joints = torch.rand(2, J, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    joints = joints * 50
    head = torch.tensor([10.0, 20.0], dtype=torch.float64)
    factor = torch.tensor([[0.4] * 8 + [0.6] * 8, [0.4] * J], dtype=torch.float64)
    factor[1, 9] = 0.6
    pred = joints + (factor * head[:, None])[..., None] * direction(2, J, seed=6)
    visible = torch.ones(2, J)
    visible[1, 0] = 0
    pred[1, 0] = float("nan")  # invisible: its prediction does not matter
    return pred, joints, visible, head


def test_mixed_case_by_hand():
    result = pckh(*mixed_case())
    assert result.counts == (1,) + (2,) * 15
    assert result.hits == (1,) + (2,) * 7 + (1, 0) + (1,) * 6
    assert result.per_joint == (100.0,) * 8 + (50.0, 0.0) + (50.0,) * 6
    # headline: all visible instances but pelvis and thorax, 18 hits of 27
    assert result.mean == pytest.approx(100 * 18 / 27)
    assert result.mean_joints == pytest.approx((6 * 100 + 50 + 0 + 6 * 50) / 14)
    assert result.groups == {
        "Head": 25.0,
        "Shoulder": 50.0,
        "Elbow": 50.0,
        "Wrist": 50.0,
        "Hip": 100.0,
        "Knee": 100.0,
        "Ankle": 100.0,
    }
    everything = pckh(*mixed_case(), mean_excludes=())
    assert everything.mean == pytest.approx(100 * 22 / 31)
    assert everything.mean_joints == pytest.approx((8 * 100 + 50 + 0 + 6 * 50) / 16)
    assert result.label == "PCKh@0.5" and result.n_samples == 2


def test_group_summary_averages_left_and_right():
    # four samples; misses: l_shoulder in one, upper_neck in all, r_wrist in two, l_wrist never
    joints = torch.zeros(4, J, 2, dtype=torch.float64)
    head = torch.ones(4, dtype=torch.float64)
    pred = joints.clone()
    miss = {13: [0], 8: [0, 1, 2, 3], 10: [0, 1]}
    for j, samples in miss.items():
        pred[samples, j, 0] = 1.0
    visible = torch.ones(4, J)
    visible[:, 0] = 0  # r_ankle never visible: Ankle is l_ankle alone
    groups = pckh(pred, joints, visible, head).groups
    assert groups["Shoulder"] == (100 + 75) / 2
    assert groups["Head"] == (100 + 0) / 2
    assert groups["Wrist"] == (50 + 100) / 2
    assert groups["Ankle"] == 100.0 and groups["Hip"] == 100.0


def test_invisible_joints_do_not_count():
    acc = PCKAccumulator()
    acc.update(*mixed_case())
    before = acc.result().to_dict()
    wild = torch.full((3, J, 2), float("nan"))
    acc.update(wild, wild, torch.zeros(3, J), torch.zeros(3))  # normaliser unused: no joints
    assert acc.result().to_dict() == before


def test_batches_merge_and_one_pass_agree():
    pred, joints, visible, head = random_batch(40, seed=7)
    whole = PCKAccumulator()
    whole.update(pred, joints, visible, head)
    batched, first, second = PCKAccumulator(), PCKAccumulator(), PCKAccumulator()
    for lo, hi in [(0, 13), (13, 40)]:
        batched.update(pred[lo:hi], joints[lo:hi], visible[lo:hi], head[lo:hi])
    first.update(pred[:25], joints[:25], visible[:25], head[:25])
    second.update(pred[25:].numpy(), joints[25:].numpy(), visible[25:].numpy(), head[25:].numpy())
    merged = first.merge(second)
    expected = whole.result()
    assert 0 < expected.mean < 100
    assert batched.result() == expected and merged.result() == expected
    assert whole.all_reduce() is whole and whole.result() == expected  # not distributed: no-op


def test_all_reduce_on_a_one_process_group(tmp_path):
    import torch.distributed as dist

    pred, joints, visible, head = random_batch(10, seed=8)
    acc = PCKAccumulator()
    acc.update(pred, joints, visible, head)
    expected = acc.result()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        assert acc.all_reduce().result() == expected
    finally:
        dist.destroy_process_group()


def test_to_dict_is_json():
    pred, joints, visible, head = random_batch(5, seed=9)
    visible[:, 4] = False
    data = json.loads(json.dumps(pckh(pred, joints, visible, head).to_dict(), allow_nan=False))
    assert data["metric"] == "PCKh@0.5" and data["joints"]["l_knee"]["accuracy"] is None
    assert list(data["joints"]) == list(MPII_JOINTS) and data["n_visible"] == int(visible.sum())
    assert set(data["groups"]) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"}


def test_accumulator_rejects_bad_input():
    pred, joints, visible, head = random_batch(2, seed=10)
    acc = PCKAccumulator()
    with pytest.raises(TcompressError, match="normalizer\\[1\\] is 0.0"):
        acc.update(pred, joints, visible, torch.tensor([5.0, 0.0]))
    with pytest.raises(TcompressError, match="pred of shape \\(2, 15, 2\\)"):
        acc.update(pred[:, :15], joints, visible, head)
    with pytest.raises(TcompressError, match="visible of shape"):
        acc.update(pred, joints, visible[:1], head)
    bad = joints.clone()
    bad[0, 3] = float("inf")
    with pytest.raises(TcompressError, match="joints\\[0, 3\\]"):
        acc.update(pred, bad, torch.ones(2, J), head)
    with pytest.raises(TcompressError, match="cannot merge"):
        acc.merge(PCKAccumulator(threshold=0.2))
    with pytest.raises(TcompressError, match="threshold"):
        PCKAccumulator(threshold=0)
    with pytest.raises(TcompressError, match="joint_names"):
        PCKAccumulator(n_joints=3, joint_names=["a", "b"])
    with pytest.raises(TcompressError, match="mean_excludes"):
        PCKAccumulator(mean_excludes=["nose"])
    assert acc.result().counts == (0,) * J and math.isnan(acc.result().mean)


def test_custom_joints_have_no_mpii_groups():
    acc = PCKAccumulator(threshold=0.5, n_joints=3, joint_names=["a", "b", "c"])
    acc.update(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2), torch.ones(1, 3), 1.0)
    result = acc.result()
    assert result.groups == {} and result.mean_excludes == () and result.mean == 100.0


# ----------------------------------------------------------------------------- PCK (bbox)


def test_bbox_size_and_pck_bbox_by_hand():
    joints = torch.zeros(3, 4, 2, dtype=torch.float64)
    joints[0, :, 0] = torch.tensor([0.0, 10.0, 5.0, 99.0])  # joint 3 invisible
    joints[0, :, 1] = torch.tensor([0.0, 20.0, 3.0, -50.0])  # box 10 x 20: size 20
    joints[1] = torch.tensor([[4.0, 4.0], [0, 0], [0, 0], [0, 0]])  # one visible joint: size 0
    visible = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert bbox_size(joints, visible).tolist() == [20.0, 0.0, 0.0]
    pred = joints.clone()
    pred[0, 0, 0] += 3.0  # within 0.2 * 20 = 4: hit
    pred[0, 1, 1] += 5.0  # miss
    pred[1, 0, 0] += 100.0  # sample with a degenerate box: left out
    result = pck_bbox(pred, joints, visible, joint_names=["a", "b", "c", "d"])
    assert result.label == "PCK@0.2" and result.n_samples == 1
    assert result.hits == (1, 0, 1, 0) and result.counts == (1, 1, 1, 0)
    assert result.mean == pytest.approx(200 / 3) and math.isnan(result.per_joint[3])
