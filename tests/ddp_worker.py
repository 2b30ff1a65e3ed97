"""Run by torchrun from test_distributed.py: a short DDP run; every rank writes its weights."""

import sys

import torch

from tcompress.data import SyntheticPose
from tcompress.models import StackedHourglass
from tcompress.train import TrainSettings, fit
from tcompress.train.distributed import setup, teardown

out = sys.argv[1]
context = setup("cpu")
torch.manual_seed(0)  # the same initial weights on every rank
model = StackedHourglass(n_stacks=2, depth=2, block_depth=1, features=8)
data = SyntheticPose(16, 64, 16, seed=1)
val = SyntheticPose(6, 64, 16, seed=1, split="val")
result = fit(
    model, data, TrainSettings(steps=3, batch_size=2, lr=1e-3), val_data=val, context=context
)
torch.save(
    {"state": model.state_dict(), "images": result.images, "pckh": result.evaluations[-1]["pckh"]},
    f"{out}/rank{context.rank}.pt",
)
teardown(context)
