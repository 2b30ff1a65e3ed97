"""A bearpaw checkpoint and an MPII-layout data set through the command line, as a user has them:
JPEG images in their own folder, an annotation JSON with head boxes and a validation split;
convert -> finetune -> evaluate (MPII's rules) -> export -> evaluate the ONNX file."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat

from .test_cli import cli as run

FIXTURE = Path(__file__).parent / "fixtures" / "public-layouts" / "bearpaw_hg_s1_b1.pth.tar"


def write_mpii(root: Path, n: int = 12, n_val: int = 4, seed: int = 0) -> Path:
    """``root/annotations.json`` beside ``root/images/*.jpg``: people of random joints, with head
    boxes; the last ``n_val`` entries are the validation split."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    entries = []
    for i in range(n):
        pixels = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i:06d}.jpg", quality=90)
        cx, cy = 80 + rng.uniform(-10, 10), 60 + rng.uniform(-5, 5)
        joints = [
            [float(cx + rng.uniform(-30, 30)), float(cy + rng.uniform(-45, 45)), 1.0]
            for _ in range(16)
        ]
        joints[3] = [0.0, 0.0, 0.0]  # one unannotated joint
        entries.append(
            {
                "img_paths": f"{i:06d}.jpg",
                "joint_self": joints,
                "objpos": [cx, cy],
                "scale_provided": 0.5,
                "isValidation": float(i >= n - n_val),
                "headboxes": [[cx - 8, cy - 50], [cx + 8, cy - 35]],
            }
        )
    path = root / "annotations.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.skipif(not FIXTURE.exists(), reason="the bearpaw fixture checkpoint is not there")
def test_bearpaw_checkpoint_and_mpii_jpegs_end_to_end(tmp_path):
    write_mpii(tmp_path / "mpii")
    data = str(tmp_path / "mpii")
    tnet, tuned, onnx = tmp_path / "tnet.pt", tmp_path / "tuned.pt", tmp_path / "tuned.onnx"
    size = ["--image-size", "64"]
    r = run("convert", str(FIXTURE), "--ranks", "f_in=32,f_out=32", "-o", str(tnet))
    assert r.exit_code == 0, r.output
    r = run(
        "finetune", str(tnet), "--data", data, "--steps", "2", "--batch-size", "2",
        *size, "-o", str(tuned),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    evaluations = {}
    for name, model in (("torch", tuned), ("onnx", onnx)):
        if name == "onnx":
            r = run("export", str(tuned), "--input-size", "64", "-o", str(onnx))
            assert r.exit_code == 0, r.output
        preds = tmp_path / f"{name}.mat"
        r = run(
            "evaluate", str(model), "--data", data, *size, "--preds-mat", str(preds), "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        evaluations[name] = json.loads(r.stdout)
        evaluations[name]["preds"] = loadmat(preds)["preds"]
    torch_eval, onnx_eval = evaluations["torch"], evaluations["onnx"]
    assert torch_eval["rules"] == "mpii"
    assert torch_eval["head_sizes"] == "head boxes of the annotations"
    pckh = torch_eval["pckh"]
    assert pckh["n_samples"] == 4 and pckh["joints"]["l_hip"]["count"] == 0
    assert pckh["joints"]["r_hip"]["count"] == 4  # every annotated joint, inside the crop or not
    assert set(pckh["groups"]) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"}
    assert torch_eval["preds"].shape == (4, 16, 2)
    # The ONNX file predicts the same joints, so scores the same.
    assert np.abs(torch_eval["preds"] - onnx_eval["preds"]).max() < 1e-2
    assert onnx_eval["pckh"] == pckh
    assert onnx_eval["kind"] == "onnx"
