"""DistributedDataParallel on the CPU: two processes under torchrun (gloo)."""

import os
import subprocess
import sys

import torch

WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")


def torchrun(*args, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *map(str, args),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_two_processes_end_with_identical_weights(tmp_path):
    r = torchrun(WORKER, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in range(2)]
    torch.manual_seed(0)
    from tcompress.models import StackedHourglass

    initial = StackedHourglass(n_stacks=2, depth=2, block_depth=1, features=8).state_dict()
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys() == initial.keys()
    for key in a:  # parameters and BatchNorm statistics alike
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["scores.1.weight"], initial["scores.1.weight"])  # it trained
    assert ranks[0]["images"] == 3 * 2 * 2  # 3 steps of 2 images on each of 2 processes
    assert ranks[0]["pckh"] == ranks[1]["pckh"]  # evaluation summed over both shards


def test_cli_finetune_under_torchrun_writes_once(tmp_path):
    from tcompress import convert
    from tcompress.models import random_hourglass
    from tcompress.serialize import load, save

    save(
        convert(
            random_hourglass(0, n_stacks=1, depth=2, block_depth=1, features=8),
            ranks="1,2,3,1,4,4,3,3",
        ),
        tmp_path / "t.pt",
    )
    r = torchrun(
        "-m",
        "tcompress",
        "finetune",
        tmp_path / "t.pt",
        "--data",
        "synthetic",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--image-size",
        "64",
        "--eval-samples",
        "4",
        "-o",
        tmp_path / "ft.pt",
        "--json",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count('"output"') == 1  # rank 0 alone reports
    assert sorted(os.listdir(tmp_path)) == ["ft.pt", "t.pt"]
    assert load(tmp_path / "ft.pt").method == "tucker"
