import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from tcompress.data import (
    FLIP_PAIRS,
    FLIP_PERMUTATION,
    JOINTS,
    PARENTS,
    ImageFolder,
    MPIIDataset,
    SyntheticPose,
    default_sigma,
    flip_heatmaps,
    flip_joints,
    gaussian_heatmaps,
    make_dataset,
    write_image,
)
from tcompress.data.figure import Figure, render_pose, sample_figure
from tcompress.data.mpii import CENTER_SHIFT, MPII_ORIGIN
from tcompress.data.skeleton import LIMBS, head_size
from tcompress.data.transforms import (
    crop_matrix,
    heatmap_to_image,
    image_to_heatmap,
    sample_rng,
    transform_points,
    warp,
)
from tcompress.errors import DataError, TcompressError
from tcompress.vocabulary import SPLITS

KEYS = {"image", "heatmaps", "joints", "visible", "head_size", "index"}


def _spot(image: torch.Tensor) -> np.ndarray:
    """(x, y) centroid of the brightest pixels (above 3/4 of the range)."""
    grey = image.sum(0) if image.ndim == 3 else image
    grey = grey - grey.min()
    ys, xs = torch.nonzero(grey > 0.75 * grey.max(), as_tuple=True)
    return np.array([xs.float().mean(), ys.float().mean()])


# --- skeleton -----------------------------------------------------------------------------------


def test_joint_set_flip_pairs_and_tree():
    assert len(JOINTS) == 16 and JOINTS[6] == "pelvis" and JOINTS[9] == "head_top"
    for right, left in FLIP_PAIRS:
        assert JOINTS[right].replace("r_", "l_") == JOINTS[left]
    assert all(FLIP_PERMUTATION[FLIP_PERMUTATION[j]] == j for j in range(16))
    assert [FLIP_PERMUTATION[j] for j in (6, 7, 8, 9)] == [6, 7, 8, 9]
    for j in range(16):  # every joint reaches the pelvis root
        seen = 0
        while PARENTS[j] != -1:
            j, seen = PARENTS[j], seen + 1
            assert seen < 16
        assert j == 6
    assert len(LIMBS) == 15
    joints = np.zeros((16, 2))
    joints[9] = (0.0, -10.0)
    assert head_size(joints) == pytest.approx(0.6 * math.sqrt(2) * 10)


# --- targets and geometry -----------------------------------------------------------------------


def test_gaussian_heatmaps():
    joints = np.array([[10.3, 20.6], [5.0, 5.0], [20.0, 3.0]])
    maps = gaussian_heatmaps(joints, np.array([1.0, 0.0, 1.0]), 32)
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32
    assert maps[1].abs().max() == 0
    assert divmod(int(maps[0].argmax()), 32) == (21, 10)
    assert maps[2, 3, 20] == pytest.approx(1.0)
    assert maps[2, 3, 21] == pytest.approx(math.exp(-0.5))  # sigma 1 at 32 x 32
    assert default_sigma(64) == 2.0 and default_sigma((128, 16)) == 4.0
    batch = gaussian_heatmaps(np.stack([joints] * 2), np.ones((2, 3)), (16, 8), sigma=2)
    assert batch.shape == (2, 3, 16, 8)
    with pytest.raises(DataError, match="expected"):
        gaussian_heatmaps(joints, np.ones(4), 8)


def test_crop_warp_keeps_pixels_and_points_aligned():
    image = torch.zeros(3, 90, 120)
    image[:, 28:33, 78:83] = 1.0  # a bright square centred on (80, 30)
    for rotation, flip in [(0.0, False), (25.0, False), (-30.0, True)]:
        matrix = crop_matrix((60.0, 45.0), 100.0, 50, rotation, flip)
        out = warp(image, matrix, 50)
        assert np.allclose(transform_points(matrix, [80.0, 30.0]), _spot(out), atol=0.5)
    points = np.array([[0.0, 0.0], [255.0, 127.5]])
    assert np.allclose(heatmap_to_image(image_to_heatmap(points, 256, 64), 256, 64), points)
    assert np.allclose(image_to_heatmap([[1.5, 253.5]], 256, 64), [[0.0, 63.0]])


def test_flip_swaps_left_and_right_by_hand():
    joints = np.stack([np.arange(16.0), np.full(16, 7.0)], axis=1)  # x = joint index
    visible = np.zeros(16)
    visible[0] = 1  # only the right ankle
    flipped, vis = flip_joints(joints, visible, width=100)
    assert flipped[5].tolist() == [99.0, 7.0]  # the right ankle's point is now the left ankle
    assert flipped[0].tolist() == [94.0, 7.0]
    assert flipped[6].tolist() == [93.0, 7.0]  # pelvis stays pelvis
    assert flipped[10].tolist() == [84.0, 7.0]  # r_wrist <- l_wrist (15)
    assert vis.tolist() == [0] * 5 + [1] + [0] * 10
    maps = gaussian_heatmaps(joints / 4, np.ones(16), 32)
    expected = gaussian_heatmaps(flip_joints(joints / 4, np.ones(16), 32)[0], np.ones(16), 32)
    assert torch.allclose(flip_heatmaps(maps), expected, atol=1e-6)


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_sample_format():
    data = SyntheticPose(5, image_size=64, heatmap_size=16, split="val")
    sample = data[3]
    assert set(sample) == KEYS and sample["index"] == 3
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["heatmaps"].shape == (16, 16, 16) and sample["heatmaps"].dtype == torch.float32
    assert sample["joints"].shape == (16, 2) and sample["visible"].shape == (16,)
    assert sample["head_size"].shape == () and sample["head_size"] > 0
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["head_size"].shape == (4,)
    with pytest.raises(IndexError):
        data[5]
    with pytest.raises(DataError, match="split 'holdout'"):
        SyntheticPose(5, split="holdout")
    with pytest.raises(TcompressError, match="image_size must be"):
        SyntheticPose(5, image_size=0)


def _same(a, b):
    return all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in KEYS)


def test_synthetic_is_deterministic_per_index():
    data = SyntheticPose(12, image_size=48, heatmap_size=12, seed=3)
    forward = [data[i] for i in range(12)]
    backward = [data[i] for i in reversed(range(12))][::-1]
    again = SyntheticPose(12, image_size=48, heatmap_size=12, seed=3)
    assert all(_same(a, b) for a, b in zip(forward, backward))
    assert all(_same(a, again[i]) for i, a in enumerate(forward))
    loaded = list(DataLoader(data, batch_size=3, num_workers=2))
    assert torch.equal(
        torch.cat([b["image"] for b in loaded]), torch.stack([s["image"] for s in forward])
    )
    other_seed = SyntheticPose(12, image_size=48, heatmap_size=12, seed=4)[0]
    val = SyntheticPose(12, image_size=48, heatmap_size=12, seed=3, split="val")[0]
    assert not torch.equal(forward[0]["image"], other_seed["image"])
    assert not torch.equal(forward[0]["image"], val["image"])
    assert not torch.equal(forward[0]["image"], forward[1]["image"])
    data.set_epoch(1)
    assert not torch.equal(data[0]["image"], forward[0]["image"])


def test_synthetic_heatmaps_sit_on_visible_joints():
    data = SyntheticPose(24, image_size=64, heatmap_size=32, seed=1)
    for i in range(len(data)):
        sample = data[i]
        joints, visible, maps = sample["joints"], sample["visible"], sample["heatmaps"]
        inside = ((joints > -0.5) & (joints < 31.5)).all(1)
        assert not (visible.bool() & ~inside).any()
        for j in range(16):
            if visible[j]:
                y, x = divmod(int(maps[j].argmax()), 32)
                assert abs(x - joints[j, 0]) <= 1 and abs(y - joints[j, 1]) <= 1
            else:
                assert maps[j].abs().max() == 0


def test_synthetic_clutter_occlusion_and_statistics():
    data = SyntheticPose(40, image_size=64, heatmap_size=16, seed=2)
    occluded, stds, means = 0, [], []
    for i in range(len(data)):
        scene = data.scene(i)
        background = scene.image[:, scene.figure_mask + scene.occluder_mask == 0]
        assert background.std(axis=1).mean() > 0.03  # textured, not flat
        inside = ((scene.joints > -0.5) & (scene.joints < 63.5)).all(1)
        occluded += bool((inside & (scene.visible == 0)).any() and scene.occluder_mask.any())
        image = data[i]["image"]
        stds.append(float(image.std()))
        means.append(float(image.mean()))
    assert 3 <= occluded <= 35
    assert abs(np.mean(means)) < 0.5 and 0.6 < np.mean(stds) < 1.5


def test_synthetic_limbs_match_the_figure():
    rng = sample_rng("test", 0)
    figure = sample_figure(rng, 64, rotation_std=0.0)
    canvas = np.zeros((3, 64, 64), np.float32)
    mask = np.zeros((64, 64), np.float32)
    render_pose(canvas, figure, mask)
    for parent, child in LIMBS:  # limb midpoints inside the image are painted
        mid = np.round((figure.joints[parent] + figure.joints[child]) / 2).astype(int)
        if (0 <= mid).all() and (mid < 64).all():
            assert mask[mid[1], mid[0]] > 0.5
    assert 0.02 < mask.mean() < 0.6 and canvas[:, mask > 0.5].std() > 0


def test_render_pose_hand_made_figure():
    joints = np.array(
        [
            [26, 56],
            [26, 46],
            [28, 36],
            [36, 36],
            [38, 46],
            [38, 56],
            [32, 36],
            [32, 24],
            [32, 20],
            [32, 12],
            [8, 24],
            [16, 24],
            [24, 24],
            [40, 24],
            [48, 24],
            [56, 24],
        ],
        dtype=float,
    )  # a T-pose facing the camera: the right side on the image's left
    canvas = np.full((3, 64, 64), 0.5, np.float32)
    mask = np.zeros((64, 64), np.float32)
    render_pose(canvas, Figure(joints, torso=12.0), mask)
    for j in range(16):
        assert mask[int(joints[j, 1]), int(joints[j, 0])] > 0.5
    assert np.all(canvas[:, mask == 0] == 0.5) and mask[2, 2] == 0 and mask[60, 60] == 0
    red_sleeve, skin = canvas[:, 24, 20], canvas[:, 16, 32]
    assert red_sleeve[0] > red_sleeve[2] and skin[0] > 0.3


# --- MPII-style reader --------------------------------------------------------------------------


def _person(path, joints, validation=0, center=(60, 50), scale=0.4):
    """An entry whose crop is centred on ``center``: its ``objpos`` lies ``CENTER_SHIFT x scale``
    above it. ``center`` and ``joints`` are 0-based; the file counts pixels from 1, as MPII's."""
    rows = [[0, 0, 0] for _ in range(16)]
    for j, (x, y) in joints.items():
        rows[j] = [x + MPII_ORIGIN, y + MPII_ORIGIN, 1]
    return {
        "img_paths": path,
        "joint_self": rows,
        "objpos": [center[0] + MPII_ORIGIN, center[1] - CENTER_SHIFT * scale + MPII_ORIGIN],
        "scale_provided": scale,
        "isValidation": validation,
    }


@pytest.fixture
def mpii(tmp_path):
    for k in range(3):
        image = np.zeros((100, 120, 3), np.uint8)
        image[47:54, 82:89] = 255  # a bright spot on the right ankle at (85, 50)
        write_image(tmp_path / f"im{k}.png", image)
    joints = {0: (85, 50), 5: (40, 60), 8: (60, 30), 9: (60, 20), 15: (5, 50)}
    entries = [_person(f"im{k}.png", joints, validation=int(k == 2)) for k in range(3)]
    (tmp_path / "annotations.json").write_text(json.dumps(entries))
    return tmp_path


def test_mpii_crop_without_augmentation(mpii):
    data = MPIIDataset(mpii, mpii / "annotations.json", "train", 64, 16, augment=False)
    assert len(data) == 2
    assert len(MPIIDataset(mpii, mpii / "annotations.json", "test", 64, 16)) == 1
    sample = data[0]
    assert set(sample) == KEYS | {"matrix"}  # unaugmented samples carry their way back
    assert np.allclose(sample["matrix"].numpy(), crop_matrix((60, 50), 100, 64))
    # crop side 200 * 0.4 * 1.25 = 100 around (60, 50): x 85 -> 47.5 in the 64 crop -> 11.5
    assert sample["joints"][0].tolist() == pytest.approx([11.5, 7.5])
    assert sample["visible"].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 1, 1] + [0] * 6
    assert divmod(int(sample["heatmaps"][0].argmax()), 16) in [(7, 11), (7, 12), (8, 11), (8, 12)]
    assert sample["heatmaps"][15].abs().max() == 0  # outside the crop
    assert float(sample["head_size"]) == pytest.approx(0.6 * math.sqrt(2) * 10 * 0.64 * 0.25)
    assert np.allclose(_spot(sample["image"]), [47.5, 31.5], atol=0.5)


def test_mpii_head_size_without_head_joints(mpii):
    entries = [_person("im0.png", {0: (85, 50)}, scale=0.4)]
    (mpii / "headless.json").write_text(json.dumps(entries))
    sample = MPIIDataset(mpii, mpii / "headless.json", "train", 64, 16, augment=False)[0]
    # 200 px x 0.4 / 8 = 10 px neck-top segment, crop side 100 px -> 16 heatmap px per 100
    assert float(sample["head_size"]) == pytest.approx(0.6 * math.sqrt(2) * 10 * 0.16)


def test_mpii_augmentation_flips_left_and_right(mpii):
    data = MPIIDataset(mpii, mpii / "annotations.json", "train", 64, 16, augment=True, seed=5)
    flips = set()
    for epoch in range(12):
        data.set_epoch(epoch)
        sample = data[0]
        spot = image_to_heatmap(_spot(sample["image"]), 64, 16)
        # The spot marks the right ankle; in a flipped crop that point is labelled left ankle.
        near = [j for j in (0, 5) if np.abs(sample["joints"][j].numpy() - spot).max() <= 0.5]
        assert len(near) == 1 and sample["visible"][near[0]] == 1
        flipped = near[0] == 5
        flips.add(flipped)
        # Only the left wrist is labelled: after a flip it is the right wrist.
        assert sample["visible"][15 if flipped else 10] == 0
    assert flips == {False, True}


def test_mpii_errors_name_entry_and_field(tmp_path, mpii):
    with pytest.raises(DataError, match="is not a directory"):
        MPIIDataset(tmp_path / "nowhere", mpii / "annotations.json")
    with pytest.raises(DataError, match="does not exist"):
        MPIIDataset(mpii, mpii / "missing.json")
    (mpii / "broken.json").write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        MPIIDataset(mpii, mpii / "broken.json")
    entries = json.loads((mpii / "annotations.json").read_text())
    cases = [
        ("joint_self", entries[1]["joint_self"][:15]),
        ("objpos", [1]),
        ("scale_provided", -1),
        ("isValidation", 2),
        ("img_paths", None),
    ]
    for field, value in cases:
        broken = json.loads(json.dumps(entries))
        broken[1][field] = value
        (mpii / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(DataError, match=rf"entry 1: field '{field}'"):
            MPIIDataset(mpii, mpii / "bad.json")
    for path in ("/etc/hostname", "../outside.png", "a/../../outside.png", "C:\\x.png"):
        broken = json.loads(json.dumps(entries))
        broken[1]["img_paths"] = path
        (mpii / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(DataError, match=r"entry 1: image path .* leaves the image root"):
            MPIIDataset(mpii, mpii / "bad.json")
    entries[0]["img_paths"] = "gone.png"
    (mpii / "bad.json").write_text(json.dumps(entries))
    with pytest.raises(
        DataError, match=r"entry 0: image file .*gone.png does not exist \(1 of 2 train entries"
    ):
        MPIIDataset(mpii, mpii / "bad.json")
    entries[0]["img_paths"] = "im0.png"
    entries[1]["img_paths"] = "junk.png"
    (mpii / "junk.png").write_bytes(b"junk")
    (mpii / "bad.json").write_text(json.dumps(entries))
    data = MPIIDataset(mpii, mpii / "bad.json", augment=False)
    with pytest.raises(DataError, match="entry 1: .*junk.png is not an image file Pillow can read"):
        data[1]


# --- unlabeled folder and factory ---------------------------------------------------------------


def test_image_folder(tmp_path):
    write_image(tmp_path / "b.png", np.full((20, 40, 3), 200, np.uint8))
    np.save(tmp_path / "a.npy", np.ones((30, 30), np.float32))
    (tmp_path / "notes.txt").write_text("not an image")
    data = ImageFolder(tmp_path, image_size=32)
    assert [p.name for p in data.files] == ["a.npy", "b.png"]
    sample = data[1]
    assert set(sample) == {"image", "index"} and sample["image"].shape == (3, 32, 32)
    image = sample["image"]
    assert image[:, 16, 16].min() > 1.0  # bright content in the middle
    assert image[:, 2, 16].abs().max() < 1e-6  # letterbox padding is the mean colour
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no"):
        ImageFolder(tmp_path / "empty")


def test_make_dataset_dispatch(tmp_path, mpii):
    synthetic = make_dataset("synthetic", "val", 32, 8, n=7, seed=1)
    assert isinstance(synthetic, SyntheticPose) and len(synthetic) == 7 and not synthetic.augment
    by_file = make_dataset(str(mpii / "annotations.json"), "train", 32, 8)
    by_dir = make_dataset(mpii, "test", 32, 8)
    assert isinstance(by_file, MPIIDataset) and by_file.augment and len(by_file) == 2
    assert isinstance(by_dir, MPIIDataset) and len(by_dir) == 1 and not by_dir.augment
    assert isinstance(make_dataset(mpii, "train", 32, 8, n=1), Subset)
    (mpii / "annotations.json").unlink()
    assert isinstance(make_dataset(mpii, image_size=32), ImageFolder)
    with pytest.raises(DataError, match="'nowhere' does not exist; expected 'synthetic'"):
        make_dataset("nowhere")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="is not usable; expected 'synthetic'"):
        make_dataset(tmp_path / "other")


def test_the_three_synthetic_splits_share_no_sample():
    from tcompress.data import make_dataset

    firsts = [make_dataset("synthetic", s, 32, 8, n=2)[0]["image"] for s in SPLITS]
    for i in range(3):
        for j in range(i):
            assert not torch.equal(firsts[i], firsts[j])
    assert len(make_dataset("synthetic", "test", 32, 8)) == 1000


def test_mpii_splits_hold_out_whole_training_images(tmp_path):
    from tcompress.data.mpii import HELD_OUT, held_out, split_of

    joints = {0: (85, 50), 9: (60, 20)}
    names = [f"im{k}.png" for k in range(200)]
    people = [_person(n, joints, validation=0) for n in names] + [
        _person("im19.png", joints, validation=0),  # a second person of a held-out image
        _person("v.png", joints, validation=1),
    ]
    (tmp_path / "annotations.json").write_text(json.dumps(people))
    from tcompress.data.mpii import load_annotations

    loaded = load_annotations(tmp_path / "annotations.json")
    splits = [split_of(p) for p in loaded]
    assert splits[-1] == "test" and splits[19] == splits[200] == "val"
    held = sum(held_out(n) for n in names)
    assert splits.count("val") == held + 1 and 200 / HELD_OUT / 2 < held < 200 / HELD_OUT * 2
    assert held_out("a\\b.png") == held_out("a/b.png")
