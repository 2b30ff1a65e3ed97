"""Convert the bundled pretrained hourglass to a Tucker T-Net, fine-tune it, evaluate, save, reload.

Run: python examples/convert_and_finetune.py [-o tnet-example.pt] [--quick]
(``--quick``: 1 step of 2 images and 4 held-out images, a smoke test whose figures mean nothing)
With your own checkpoint, pass its path to ``tcompress.convert`` instead of the model, and your
data to ``make_dataset`` (an MPII-style annotation file, or a folder of images for distillation).
"""

import argparse

import torch

import tcompress
from tcompress.data import make_dataset
from tcompress.models import pretrained
from tcompress.train import TrainSettings, evaluate_pck, fit, recalibrate_batchnorm

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("-o", "--output", default="tnet-example.pt", help="Where the T-Net is saved.")
parser.add_argument("--quick", action="store_true", help="a few images and steps (a smoke test)")
args = parser.parse_args()
steps, batch, val_images, bn_images = (1, 2, 4, 4) if args.quick else (20, 16, 100, 128)

torch.manual_seed(0)
dense = pretrained()

# Keep the small modes whole and compress the channel modes to 20 of 32.
tnet = tcompress.convert(dense, method="tucker", ranks={"f_in": 20, "f_out": 20})
s = tnet.summary
print(
    f"ranks {s['ranks']}: {s['params_before']:,} -> {s['params_after']:,} parameters "
    f"({s['compression_ratio']:.2f}x), relative error of W {s['relative_error']:.3f}"
)

train = make_dataset("synthetic", "train", image_size=256, heatmap_size=64)
val = make_dataset("synthetic", "val", image_size=256, heatmap_size=64, n=val_images)
print(f"PCKh@0.5 original {evaluate_pck(dense, val)['mean']:.1f}%")
print(f"PCKh@0.5 converted {evaluate_pck(tnet, val)['mean']:.1f}%")

# Re-estimate BatchNorm statistics from a few batches (labels unused), then fine-tune: the T-Net
# is an nn.Module, so any training loop works; tcompress.train.fit is the one the CLI uses.
loader = torch.utils.data.DataLoader(
    torch.utils.data.Subset(train, range(bn_images)), batch_size=16
)
recalibrate_batchnorm(tnet, loader)
tnet.set_forward("factorized")  # the cheaper form to train at these ranks
result = fit(tnet, train, TrainSettings(steps=steps, batch_size=batch, lr=1e-4), log_every=5)
print("loss every 5 steps:", [round(h["loss"], 5) for h in result.history])
print(f"PCKh@0.5 fine-tuned {evaluate_pck(tnet, val)['mean']:.1f}%")

tcompress.save(tnet, args.output)  # atomically: a temporary file beside it, renamed into place
reloaded = tcompress.load(args.output, forward="reconstructed").eval()
images = val[0]["image"][None]
with torch.no_grad():
    a, b = tnet.eval()(images), reloaded(images)
print(
    "reloaded in the other forward form, max difference:",
    max(float((x - y).abs().max()) for x, y in zip(a, b)),
)
