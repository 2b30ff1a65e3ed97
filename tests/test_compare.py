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


def test_compare_cli_recipe_test_split_and_paired_differences(tmp_path, monkeypatch):
    from tcompress import conversion

    monkeypatch.setattr(conversion, "SEARCH_IMAGES", 4)  # --rank-data on a few images
    monkeypatch.setattr(conversion, "QUICK_IMAGES", 2)
    checkpoint = tmp_path / "hg.pth"
    torch.save(make_hourglass(n_joints=16).state_dict(), checkpoint)
    out = tmp_path / "cmp"
    args = ["compare", str(checkpoint), "--ratios", "2", "--methods", "tucker,layerwise-cp"]
    args += ["--steps", "2", "--batch-size", "2", "--seeds", "0,1", "--val-samples", "4"]
    args += ["--recalibrate", "2", "--bootstrap", "50", "--image-size", "32", "-o", str(out)]
    args += ["--onnx-repeats", "1", "--schedule", "cosine", "--train-samples", "6", "--cache"]
    args += ["--split", "test", "--rank-data"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "Paired differences" in r.stdout and "tucker" in r.stdout
    report = json.loads((out / "compare.json").read_text())
    assert report["settings"]["split"] == "test" and report["settings"]["cache"] is True
    assert report["settings"]["rank_data"] is True
    assert len(report["counts"]) == 4
    for row in report["rows"]:
        assert len(row["hits"]) == 2 and len(row["hits"][0]) == 4  # seeds x images
    from tcompress.experiments.compare import CompareReport, paired_differences

    differences = paired_differences(CompareReport.from_dict(report))
    pairs = [(d.a, d.b) for d in differences]
    assert pairs == [
        ("tucker", "layerwise-cp"),
        ("tucker", "uncompressed"),
        ("layerwise-cp", "uncompressed"),
    ]
    rows = {row["method"]: row for row in report["rows"]}
    first = differences[0]
    assert first.mean == pytest.approx(
        rows["tucker"]["after"]["mean"] - rows["layerwise-cp"]["after"]["mean"]
    )
    assert first.low <= first.mean <= first.high


def test_paired_difference_interval_is_narrower_than_the_rows_when_rows_agree():
    from tcompress.experiments.compare import (
        Accuracy,
        CompareReport,
        CompareRow,
        paired_differences,
    )

    counts = torch.full((200,), 14)
    g = torch.Generator().manual_seed(0)
    hard = torch.randint(0, 15, (200,), generator=g)  # image difficulty, shared by both rows
    a = hard.clone()
    b = (hard - (torch.rand(200, generator=g) < 0.3).long()).clamp(min=0)  # b misses a bit more

    def row(method, hits):
        return CompareRow(method, 3.0, [1], 1, 3.0, None, Accuracy(0, 0, 0), hits=[hits.tolist()])

    settings = CompareSettings(ratios=(3.0,), methods=("tucker", "layerwise-cp"), bootstrap=400)
    report = CompareReport(
        settings, "m", 1, [row("tucker", a), row("layerwise-cp", b)], 0.0, counts.tolist()
    )
    (d,) = paired_differences(report)
    expected = 100 * float((a - b).sum()) / float(counts.sum())
    assert d.mean == pytest.approx(expected)
    assert 0 < d.low <= d.mean <= d.high  # the paired interval excludes 0 ...
    from tcompress.experiments.compare import bootstrap_accuracy, shared_resamples

    alone = bootstrap_accuracy(a[None], counts, shared_resamples(200, 400))
    assert d.high - d.low < (alone.high - alone.low) / 3  # ... where each row's is wide


def test_compare_settings_check_the_recipe_fields():
    with pytest.raises(TcompressError, match="split is 'train'; expected one of val, test"):
        CompareSettings(split="train")
    with pytest.raises(TcompressError, match="schedule is 'fast'; expected one of step"):
        CompareSettings(schedule="fast")
    with pytest.raises(TcompressError, match="train_samples is 0; expected a whole number"):
        CompareSettings(train_samples=0)
    old = CompareSettings().to_dict()
    for key in ("schedule", "precision", "train_samples", "cache", "workers", "split", "rank_data"):
        old.pop(key)
    assert CompareSettings(**old).split == "val"  # records written before these fields load


def test_merged_parts_pool_seeds_and_keep_every_ratio_and_method():
    from tcompress.experiments.compare import (
        Accuracy,
        CompareReport,
        CompareRow,
        bootstrap_accuracy,
        merge_reports,
        paired_differences,
        shared_resamples,
    )

    counts = torch.full((50,), 10)
    g = torch.Generator().manual_seed(1)

    def hits():
        return torch.randint(0, 11, (50,), generator=g)

    def row(method, seed_hits, target=3.0):
        seeds = [h.tolist() for h in seed_hits]
        return CompareRow(method, target, [1], 1, 3.0, Accuracy(5, 4, 6), None, hits=seeds)

    def part(rows, methods, seeds, ratios=(3.0,), **changes):
        settings = CompareSettings(
            ratios=ratios, methods=methods, seeds=seeds, bootstrap=200, **changes
        )
        return CompareReport(settings, "m", 1, rows, 1.0, counts.tolist())

    t0, t1, c0 = hits(), hits(), hits()
    merged = merge_reports(
        [
            part(
                [row("tucker", [t0]), row("layerwise-cp", [c0])], ("tucker", "layerwise-cp"), (0,)
            ),
            part([row("tucker", [t1]), row("mps", [hits()], 2.0)], ("tucker", "mps"), (1,), (2.0,)),
        ]
    )
    assert merged.settings.seeds == (0, 1)
    assert merged.settings.methods == ("tucker", "layerwise-cp", "mps")
    assert merged.settings.ratios == (2.0, 3.0)
    tucker = next(r for r in merged.rows if r.method == "tucker")
    assert tucker.hits == [t0.tolist(), t1.tolist()]
    expected = bootstrap_accuracy(torch.stack([t0, t1]), counts, shared_resamples(50, 200))
    assert tucker.after == expected
    assert tucker.before == Accuracy(5, 4, 6)
    (d,) = [d for d in paired_differences(merged) if d.b == "layerwise-cp"]
    assert d.mean == pytest.approx(100 * float(((t0 + t1) / 2 - c0).sum()) / float(counts.sum()))

    with pytest.raises(TcompressError, match="cannot merge runs with steps 5 and 100"):
        merge_reports([part([], ("tucker",), (0,)), part([], ("tucker",), (1,), steps=5)])
    other = part([row("tucker", [t1])], ("tucker",), (1,))
    other.rows[0].ranks = [2]
    with pytest.raises(TcompressError, match=r"cannot merge two tucker rows at 3.0x: ranks \[1\]"):
        merge_reports([part([row("tucker", [t0])], ("tucker",), (0,)), other])


def test_a_seed_two_parts_both_ran_counts_once():
    from tcompress.experiments.compare import CompareReport, CompareRow, merge_reports

    counts = [10] * 20
    g = torch.Generator().manual_seed(2)
    h0, h1 = (torch.randint(0, 11, (20,), generator=g).tolist() for _ in range(2))

    def part(ratio, seeds, hits):
        original = CompareRow("uncompressed", None, None, 9, 1.0, None, None, hits=hits)
        tucker = CompareRow("tucker", ratio, [1], 3, ratio, None, None, hits=hits)
        settings = CompareSettings(ratios=(ratio,), methods=("tucker",), seeds=seeds)
        return CompareReport(settings, "m", 9, [original, tucker], 1.0, counts)

    # The original is fine-tuned with seed 0 by the 2x part and by the 3x part, and with seed 1
    # by a third: each seed once.
    merged = merge_reports([part(2.0, (0,), [h0]), part(3.0, (0,), [h0]), part(3.0, (1,), [h1])])
    original = next(r for r in merged.rows if r.method == "uncompressed")
    assert original.hits == [h0, h1]
    assert next(r for r in merged.rows if r.target == 3.0).hits == [h0, h1]
    assert merged.settings.seeds == (0, 1)
