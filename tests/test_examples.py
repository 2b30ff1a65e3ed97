"""Every example runs, in its quick mode, from a fresh checkout; and answers --help."""

import subprocess
import sys

import pytest

from tests.readme_check import ROOT

EXAMPLES = ROOT / "examples"
#: Each example's quick mode; ``{tmp}`` is a fresh folder (the working directory too).
QUICK = {
    "convert_and_finetune.py": ["--quick", "-o", "{tmp}/tnet.pt"],
    "compare_bundled_model.py": ["--quick", "-o", "{tmp}/compare"],
    "train_bundled_model.py": ["--quick", "--out", "{tmp}/hourglass.pth"],
    "custom_network.py": ["--quick", "-o", "{tmp}/custom-tnet.pt"],
}


def run(args: list[str], cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_every_example_has_a_quick_mode():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(QUICK)


@pytest.mark.parametrize("name", sorted(QUICK))
def test_help(name, tmp_path):
    done = run([str(EXAMPLES / name), "--help"], tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and "--quick" in done.stdout


@pytest.mark.parametrize("name", sorted(QUICK))
def test_quick_mode_runs(name, tmp_path):
    args = [a.format(tmp=tmp_path) for a in QUICK[name]]
    done = run([str(EXAMPLES / name), *args], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    written = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    expected = {
        "convert_and_finetune.py": ["tnet.pt"],
        "compare_bundled_model.py": ["compare.json", "compare.png"],
        "train_bundled_model.py": ["hourglass.json", "hourglass.pth"],
        "custom_network.py": ["custom-tnet.pt", "custom-tnet.onnx"],
    }[name]
    assert set(expected) <= set(written), written


def test_train_quick_mode_needs_an_output(tmp_path):
    done = run([str(EXAMPLES / "train_bundled_model.py"), "--quick"], tmp_path, timeout=120)
    assert done.returncode == 2 and "--quick needs --out" in done.stderr


def test_compare_plot_only_draws_the_figure_from_the_record(tmp_path):
    record = ROOT / "docs" / "records" / "compare.json"
    png = tmp_path / "compare.png"
    done = run(
        [str(EXAMPLES / "compare_bundled_model.py"), "--plot-only", "--record", str(record),
         "--png", str(png)],
        tmp_path,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
