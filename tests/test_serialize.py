import pytest
import torch

import tcompress
from tcompress.errors import CheckpointError
from tcompress.models import StackedHourglass

from .conftest import outputs, scaled_error


@pytest.mark.parametrize("method, ranks", [("tucker", (1, 2, 2, 1, 4, 5, 2, 3)), ("mps", 5)])
def test_save_load_round_trip(tmp_path, hourglass, x, method, ranks):
    tnet = tcompress.convert(hourglass, method=method, ranks=ranks).eval()
    path = tmp_path / "tnet.pt"
    tcompress.save(tnet, path)
    loaded = tcompress.load(path).eval()
    assert loaded.method == method and loaded.ranks == tnet.ranks
    assert scaled_error(outputs(loaded, x), outputs(tnet, x)) == 0
    for form in ("reconstructed", "factorized"):
        other = tcompress.load(path, forward=form).eval()
        assert other.forward_form == form
        assert scaled_error(outputs(other, x), outputs(tnet, x)) <= 1e-5


def test_file_is_self_describing_and_weights_only(tmp_path, checkpoint):
    tnet = tcompress.convert(checkpoint, ranks="f_in=4,f_out=4", forward="factorized")
    path = tmp_path / "tnet.pt"
    tcompress.save(tnet, path)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "tcompress.tnet"
    assert payload["tcompress_version"] == tcompress.__version__
    assert payload["architecture"]["config"] == dict(
        n_stacks=2, depth=2, block_depth=2, features=8, n_joints=4, in_channels=3
    )
    assert payload["method"] == "tucker"
    assert payload["ranks"] == [2, 2, 3, 2, 4, 4, 3, 3]
    assert payload["mode_names"] == [
        "stack",
        "depth",
        "pathway",
        "block",
        "f_in",
        "f_out",
        "h",
        "w",
    ]
    assert payload["mode_sizes"] == [2, 2, 3, 2, 8, 8, 3, 3]
    assert payload["forward"] == "factorized"
    import hashlib

    assert (
        payload["summary"]["source_sha256"]
        == hashlib.sha256(open(checkpoint, "rb").read()).hexdigest()
    )
    assert tcompress.load(path).forward_form == "factorized"


def test_load_a_dense_checkpoint(checkpoint, hourglass, x):
    model = tcompress.load(checkpoint).eval()
    assert isinstance(model, StackedHourglass)
    assert scaled_error(outputs(model, x), outputs(hourglass, x)) == 0


def test_tampered_file_is_refused(tmp_path, hourglass):
    tnet = tcompress.convert(hourglass, ranks=(1, 2, 2, 1, 4, 5, 2, 3))
    path = tmp_path / "tnet.pt"
    tcompress.save(tnet, path)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["tensor.core"] = torch.zeros(3, 3)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="'tensor.core' has shape"):
        tcompress.load(tmp_path / "bad.pt")
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        tcompress.load(tmp_path / "future.pt")
