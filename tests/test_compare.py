"""The comparison: paired bootstrap intervals, trimmed widths, and a tiny end-to-end run."""

import json

import pytest
import torch
from click.testing import CliRunner

from tcompress.cli import main
from tcompress.errors import TcompressError
from tcompress.evaluation import PCKAccumulator
from tcompress.experiments.compare import CompareSettings, bootstrap_accuracy, trimmed_features
from tcompress.models import HourglassConfig, StackedHourglass

from .conftest import make_hourglass


def test_bootstrap_mean_is_the_pooled_pckh_and_seeds_are_averaged():
    counts = torch.tensor([4, 2, 4, 0])
    hits = torch.tensor([[4, 1, 2, 0], [3, 2, 2, 0]])
    resamples = torch.randint(4, (500, 4), generator=torch.Generator().manual_seed(0))
    acc = bootstrap_accuracy(hits, counts, resamples)
    assert acc.seeds == pytest.approx([70.0, 70.0])
    assert acc.mean == pytest.approx(70.0)
    assert acc.low <= acc.mean <= acc.high
    perfect = bootstrap_accuracy(counts[None], counts, resamples[counts[resamples].sum(1) > 0])
    assert (perfect.mean, perfect.low, perfect.high) == (100.0, 100.0, 100.0)


def test_accumulator_keeps_per_sample_hits_over_the_mean_joints():
    acc = PCKAccumulator(keep_samples=True)
    joints = torch.zeros(2, 16, 2)
    pred = joints.clone()
    pred[0, 0] += 10  # r_ankle of sample 0 is a miss
    visible = torch.ones(2, 16)
    acc.update(pred, joints, visible, torch.ones(2))
    # pelvis and thorax are left out of the mean: 14 joints per sample.
    assert acc.sample_hits.tolist() == [13, 14]
    assert acc.sample_counts.tolist() == [14, 14]


def test_trimmed_features_meet_the_ratio():
    config = HourglassConfig(n_stacks=2, depth=4, block_depth=2, features=32)
    features, params = trimmed_features(config, 2.0)
    full = sum(p.numel() for p in StackedHourglass(**config.to_dict()).parameters())
    assert features < 32 and full / params == pytest.approx(2.0, rel=0.15)


def test_settings_errors():
    with pytest.raises(TcompressError, match=r"ratios \[0.5\]; expected numbers above 1"):
        CompareSettings(ratios=(0.5,))
    with pytest.raises(TcompressError, match="methods \\['svd'\\]; expected some of tucker"):
        CompareSettings(methods=("svd",))
    with pytest.raises(TcompressError, match="image_size is 30; expected a multiple of 4"):
        CompareSettings(image_size=30)


def test_compare_cli_end_to_end(tmp_path):
    checkpoint = tmp_path / "hg.pth"
    torch.save(make_hourglass(n_joints=16).state_dict(), checkpoint)
    out = tmp_path / "cmp"
    args = ["compare", str(checkpoint), "--ratios", "2", "--methods", "tucker,trimmed"]
    args += ["--steps", "1", "--batch-size", "2", "--seeds", "0,1", "--val-samples", "4"]
    args += ["--recalibrate", "2", "--bootstrap", "50", "--image-size", "32", "-o", str(out)]
    args += ["--onnx-repeats", "1"]
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    methods = [row["method"] for row in report["rows"]]
    assert methods == ["uncompressed", "tucker", "trimmed"]
    tucker = report["rows"][1]
    assert tucker["ratio"] == pytest.approx(2.0, rel=0.05)
    assert len(tucker["after"]["seeds"]) == 2
    assert tucker["after"]["low"] <= tucker["after"]["mean"] <= tucker["after"]["high"]
    assert tucker["onnx_form"] in ("factorized", "dense") and tucker["onnx_speedup"] > 0
    assert (out / "compare.json").exists() and (out / "compare.png").exists()


def test_a_row_kind_is_a_baseline_or_the_method_kind():
    from tcompress import methods
    from tcompress.experiments import compare

    assert compare.BASELINES == (compare.UNCOMPRESSED, compare.TRIMMED)
    assert compare.row_kind("uncompressed") == compare.UNCOMPRESSED
    assert compare.row_kind("trimmed") == compare.TRIMMED
    for name in methods.names():
        assert compare.row_kind(name) == methods.kind(name)
        assert compare.ONNX_FORMS[compare.row_kind(name)]
    # every registered method can be compared, T-Nets first, then the trimmed baseline
    tnets, layerwise = methods.names(methods.TNET), methods.names(methods.LAYERWISE)
    assert compare.COMPARE_METHODS == (*tnets, *layerwise, "trimmed")
    row = compare.CompareRow("trimmed", 2.0, [16], 10, 2.0, None, None)
    assert row.kind == compare.TRIMMED and "kind" not in compare.asdict(row)  # not in the record


def test_compare_does_not_branch_on_method_names():
    import re
    from pathlib import Path

    from tcompress.experiments import compare

    source = Path(compare.__file__).read_text()
    assert re.findall(r"method\s*(?:==|!=|in)\s*[(\"'\[]", source) == []
