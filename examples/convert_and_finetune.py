"""Convert a stacked hourglass to a Tucker T-Net, fine-tune it a few steps, save and reload it.

Run: python examples/convert_and_finetune.py
The hourglass here has random weights; with your own checkpoint pass its path to
``tcompress.convert`` instead of the model.
"""

import torch

import tcompress
from tcompress.models import StackedHourglass

torch.manual_seed(0)
dense = StackedHourglass(n_stacks=2, depth=3, block_depth=2, features=64, n_joints=16).eval()

# Compress the channel modes to half width and the stack mode to rank 1.
tnet = tcompress.convert(
    dense,
    method="tucker",
    ranks={"stack": 1, "f_in": 32, "f_out": 32},
    refine=2,
    forward="factorized",
)
s = tnet.summary
print(
    f"ranks {s['ranks']}: {s['params_before']:,} -> {s['params_after']:,} parameters "
    f"({s['compression_ratio']:.2f}x), relative error of W {s['relative_error']:.3f}"
)

# The T-Net is a plain nn.Module: distil the dense network's heatmaps into it.
images = torch.randn(4, 3, 128, 128)
with torch.no_grad():
    targets = dense(images)
optimizer = torch.optim.RMSprop(tnet.parameters(), lr=2.5e-4)
tnet.train()
for step in range(3):
    optimizer.zero_grad()
    loss = sum(torch.nn.functional.mse_loss(o, t) for o, t in zip(tnet(images), targets))
    loss.backward()
    optimizer.step()
    print(f"step {step}: distillation loss {loss.item():.5f}")

tcompress.save(tnet, "tnet-example.pt")
reloaded = tcompress.load("tnet-example.pt", forward="reconstructed").eval()
with torch.no_grad():
    a, b = tnet.eval()(images), reloaded(images)
print(
    "reloaded in the other forward form, max difference:",
    max(float((x - y).abs().max()) for x, y in zip(a, b)),
)
