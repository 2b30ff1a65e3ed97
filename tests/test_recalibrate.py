import json

import pytest
import torch
from click.testing import CliRunner

import tcompress
from tcompress.cli import main
from tcompress.train import recalibrate_batchnorm

from .conftest import make_hourglass


def test_statistics_are_the_average_over_all_batches(x):
    model = make_hourglass().train()
    params = {k: v.clone() for k, v in model.named_parameters()}
    batches = [
        torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)
    ]
    report = recalibrate_batchnorm(model, batches)
    assert (report.images, report.batches) == (12, 3)
    assert report.batchnorms == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    stem = model.stem["conv"]
    with torch.no_grad():
        means = [stem[0](b).mean(dim=(0, 2, 3)) for b in batches]
    torch.testing.assert_close(stem[1].running_mean, torch.stack(means).mean(0))
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    assert model.training and stem[1].momentum == 0.1


def test_tnet_in_eval_mode_stays_in_eval_mode():
    tnet = tcompress.convert(make_hourglass(), ranks=(1, 2, 2, 1, 4, 5, 2, 3)).eval()
    before = tnet.net.hourglasses[0].levels[0].skip.bns[0].running_mean.clone()
    batches = [{"image": torch.randn(2, 3, 32, 32)} for _ in range(2)]
    report = recalibrate_batchnorm(tnet, batches, max_batches=1)
    assert report.batches == 1 and not tnet.training
    assert not torch.equal(tnet.net.hourglasses[0].levels[0].skip.bns[0].running_mean, before)


@pytest.mark.parametrize("kind", ["dense", "tnet"])
def test_cli(tmp_path, kind):
    model = make_hourglass(n_joints=16)
    path = tmp_path / "model.pt"
    if kind == "dense":
        torch.save(model.state_dict(), path)
    else:
        tcompress.save(tcompress.convert(model, ranks="f_in=4,f_out=4"), path)
    out = tmp_path / "recalibrated.pt"
    r = CliRunner().invoke(
        main,
        [
            "recalibrate",
            str(path),
            "--data",
            "synthetic",
            "-n",
            "8",
            "--batch-size",
            "4",
            "--image-size",
            "64",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "re-estimated" in r.stdout and "8 images" in r.stdout
    loaded = tcompress.load(out)
    assert isinstance(loaded, tcompress.TNet) == (kind == "tnet")
    r = CliRunner().invoke(main, ["recalibrate", str(path), "--data", "synthetic", "-o", str(out)])
    assert r.exit_code == 2 and "exists; pass --force" in r.output


def test_recalibrate_model_is_the_command(tmp_path):
    from tcompress.errors import OutputError
    from tcompress.train import recalibrate_model

    path, out = tmp_path / "hg.pth", tmp_path / "out.pth"
    torch.save(make_hourglass(n_joints=16).state_dict(), path)
    calls = []
    options = dict(n=4, batch_size=2, image_size=64)
    report = recalibrate_model(
        path, "synthetic", output=out, progress=lambda *a: calls.append(a), **options
    )
    assert (report.images, report.batches, report.output) == (4, 2, out)
    assert calls == [(1, 2), (2, 2)]
    assert report.to_dict() == {
        "batchnorms": report.batchnorms,
        "images": 4,
        "batches": 2,
        "output": str(out),
    }
    loaded = tcompress.load(out).state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in report.model.state_dict().items())
    r = CliRunner().invoke(
        main,
        ["recalibrate", str(path), "--data", "synthetic", "-n", "4", "--batch-size", "2"]
        + ["--image-size", "64", "-o", str(tmp_path / "cli.pth"), "--json"],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == dict(report.to_dict(), output=str(tmp_path / "cli.pth"))
    with pytest.raises(OutputError, match="exists; pass force=True to overwrite it$"):
        recalibrate_model(tmp_path / "missing.pth", "synthetic", output=out)  # checked first
