"""SampleCache: samples generated once, served as drawn in epoch 0 and mirrored at random later."""

import pytest
import torch

from tcompress.data import SampleCache, SyntheticPose, flip_heatmaps, gaussian_heatmaps
from tcompress.data.skeleton import FLIP_PERMUTATION
from tcompress.errors import DataError

# float16 keeps about 3 significant digits: images are normalised to a few units, heatmaps to 1.
IMAGE_TOL, HEATMAP_TOL = 4e-3, 1e-3


@pytest.fixture(scope="module")
def source():
    return SyntheticPose(12, 64, 16, seed=5, split="train")


@pytest.fixture(scope="module")
def cache(source):
    return SampleCache(source, batch_size=5)


def test_epoch_zero_serves_the_samples_as_drawn(source, cache):
    assert len(cache) == 12
    for i in (0, 7, 11):
        want, got = source[i], cache[i]
        assert set(got) == set(want)
        torch.testing.assert_close(got["image"], want["image"], atol=IMAGE_TOL, rtol=0)
        torch.testing.assert_close(got["heatmaps"], want["heatmaps"], atol=HEATMAP_TOL, rtol=0)
        assert got["image"].dtype == got["heatmaps"].dtype == torch.float32
        assert torch.equal(got["joints"], want["joints"])
        assert torch.equal(got["visible"], want["visible"])
        assert got["index"] == i and isinstance(got["index"], int)
    # 3 x 64 x 64 image and 16 x 16 x 16 heatmaps in float16; joints, visibility and head size
    # in float32, the index in int64
    assert cache.nbytes == 12 * ((3 * 64 * 64 + 16 * 16 * 16) * 2 + (32 + 16 + 1) * 4 + 8)


def test_later_epochs_mirror_about_half_the_samples_consistently(source):
    data = SyntheticPose(64, 32, 8, seed=2, split="train")
    cache = SampleCache(data, batch_size=16)
    first = [cache[i] for i in range(64)]

    def mirrored(epoch):
        cache.set_epoch(epoch)
        return [not torch.equal(cache[i]["image"], first[i]["image"]) for i in range(64)]

    one, two = mirrored(1), mirrored(2)
    assert 16 <= sum(one) <= 48 and 16 <= sum(two) <= 48
    assert one != two  # a fresh draw every epoch
    assert mirrored(1) == one  # and the same draw for the same epoch

    cache.set_epoch(1)
    i = one.index(True)
    got, orig = cache[i], first[i]
    torch.testing.assert_close(got["image"], orig["image"].flip(-1), atol=0, rtol=0)
    torch.testing.assert_close(got["heatmaps"], flip_heatmaps(orig["heatmaps"]), atol=0, rtol=0)
    swap = list(FLIP_PERMUTATION)
    assert torch.equal(got["visible"], orig["visible"][swap])
    assert torch.equal(got["joints"][:, 1], orig["joints"][swap, 1])
    assert torch.equal(got["joints"][:, 0], 8 - 1 - orig["joints"][swap, 0])
    assert got["head_size"] == orig["head_size"]
    # the mirrored heatmaps are the targets of the mirrored joints
    redrawn = gaussian_heatmaps(got["joints"], got["visible"], 8)
    torch.testing.assert_close(got["heatmaps"], redrawn, atol=HEATMAP_TOL, rtol=0)


def test_workers_fill_the_same_cache(source, cache):
    parallel = SampleCache(source, workers=2, batch_size=5)
    assert parallel.store.keys() == cache.store.keys()
    for key in cache.store:
        assert torch.equal(parallel.store[key], cache.store[key]), key


class _Images(torch.utils.data.Dataset):
    def __init__(self, n, joints=None):
        self.n, self.joints = n, joints

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        torch.manual_seed(i)
        sample = {"image": torch.randn(3, 8, 8), "index": i}
        if self.joints:
            sample["heatmaps"] = torch.rand(self.joints, 2, 2)
        return sample


def test_unlabeled_images_mirror_and_other_joint_sets_do_not():
    images = SampleCache(_Images(16))
    drawn = [images[i]["image"] for i in range(16)]
    images.set_epoch(3)
    flipped = [i for i in range(16) if not torch.equal(images[i]["image"], drawn[i])]
    assert 0 < len(flipped) < 16
    assert all(torch.equal(images[i]["image"], drawn[i].flip(-1)) for i in flipped)
    assert set(images[0]) == {"image", "index"}

    other = SampleCache(_Images(16, joints=5))
    other.set_epoch(3)
    assert not other.mirrors
    assert all(torch.equal(other[i]["image"], other.store["image"][i].float()) for i in range(16))


def test_cache_errors():
    with pytest.raises(DataError, match="there are no samples to cache"):
        SampleCache(_Images(0))
    with pytest.raises(IndexError, match="index 4 out of range for a data set of 4 samples"):
        SampleCache(_Images(4))[4]
