import os

import pytest
import torch

from tcompress.models import StackedHourglass, random_hourglass

SMALL = dict(n_stacks=2, depth=2, block_depth=2, features=8, n_joints=4)


def make_hourglass(seed: int = 0, **overrides) -> StackedHourglass:
    return random_hourglass(seed, **{**SMALL, **overrides})


def outputs(model, x):
    with torch.no_grad():
        return list(model(x))


def scaled_error(got, ref) -> float:
    """max |got - ref| / max |ref|, worst over the outputs."""
    assert len(got) == len(ref)
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, ref))


@pytest.fixture
def hourglass():
    return make_hourglass()


@pytest.fixture
def checkpoint(tmp_path, hourglass):
    path = os.path.join(tmp_path, "hg.pth")
    torch.save(hourglass.state_dict(), path)
    return path


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def interrupt_at(monkeypatch):
    """``interrupt_at(step)``: the command-line training runs that follow stop as Ctrl-C stops
    them, at ``step``; ``interrupt_at(None)`` lets them finish again."""
    from tcompress.cli.progress import TrainingProgress

    original = TrainingProgress.event

    def at(step):
        def event(self, event):
            if event["kind"] == "step" and event["step"] == step:
                raise KeyboardInterrupt
            original(self, event)

        monkeypatch.setattr(TrainingProgress, "event", original if step is None else event)

    return at
