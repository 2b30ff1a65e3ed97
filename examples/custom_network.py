"""Compress a network of your own: train, convert, fine-tune and export a small classifier.

A ResNet-style classifier, trained here on images this script draws (stripes of four
orientations, checkerboards and blobs, in noise), becomes a Tucker T-Net, is fine-tuned in a plain
PyTorch loop and exported to ONNX, checked in ONNX Runtime against PyTorch.

Run: python examples/custom_network.py [-o custom-tnet.pt] [--ratio 4] [--quick]
(``--quick``: a few images and steps, a smoke test whose figures mean nothing)

The network's twelve 3x3 block convolutions (three stages of two residual blocks of two
convolutions, 16 channels throughout) are named ``stage{stage}.{block}.conv{conv}``; that pattern
stacks them into one tensor with modes (stage, block, conv, f_in, f_out, h, w). tcompress builds
the network again from the factory ``arch="custom_network:build"``: this file, imported as the
module ``custom_network`` (Python puts the folder of the script it runs first on ``sys.path``; on
the command line, put the folder on ``PYTHONPATH``)::

    PYTHONPATH=examples tcompress info custom-tnet.pt --arch custom_network:build
    PYTHONPATH=examples tcompress export custom-tnet.pt --arch custom_network:build \\
        --input-size 32 -o custom-tnet.onnx

``tcompress finetune``, ``evaluate`` and ``recalibrate`` train and score pose heatmaps and refuse
a network of your own: a T-Net is an ``nn.Module``, and this script's loop is the route.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: The factory tcompress imports to build the network again, and the kernels it stacks.
ARCH = "custom_network:build"
FAMILY = "stage{stage}.{block}.conv{conv}"
CLASSES = (
    "vertical stripes",
    "horizontal stripes",
    "diagonal stripes",
    "anti-diagonal stripes",
    "checkerboard",
    "blob",
)
SIZE = 32  # image side


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, then ReLU: two 3x3 convolutions of one width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(x + y)


class Net(nn.Module):
    """A strided stem, three stages of two blocks (2x max-pooling between them), global average
    pooling and a linear classifier; (N, 3, 32, 32) images -> (N, classes) logits."""

    def __init__(self, width: int = 16, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.stage1 = nn.Sequential(Block(width), Block(width))
        self.stage2 = nn.Sequential(Block(width), Block(width))
        self.stage3 = nn.Sequential(Block(width), Block(width))
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem(x))
        x = self.stage2(F.max_pool2d(x, 2))
        x = self.stage3(F.max_pool2d(x, 2))
        return self.fc(x.mean((2, 3)))


def build() -> Net:
    """The factory ``arch=`` names: called without arguments, the checkpoint loads into it."""
    return Net()


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy images of the classes (stripes of four orientations, a checkerboard, a
    blob), each with its own frequency, phase, tilt, position and colour; (images (n, 3, 32, 32),
    labels (n,)), the classes in equal numbers."""
    g = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=g)

    labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    axis = torch.linspace(-1, 1, SIZE)
    y, x = (a[None] for a in torch.meshgrid(axis, axis, indexing="ij"))
    tilt = (
        torch.tensor([0.0, 90.0, 45.0, 135.0, 0.0, 0.0])[labels] + uniform(-15, 15, n)
    ).deg2rad()
    cos, sin = tilt.cos()[:, None, None], tilt.sin()[:, None, None]
    u, v = x * cos + y * sin, y * cos - x * sin
    freq = uniform(1.5, 3.5, n)[:, None, None] * math.pi
    phase = uniform(0, 2 * math.pi, 2, n)[:, :, None, None]
    stripes = torch.sin(freq * u + phase[0])
    checker = torch.sin(freq * u + phase[0]) * torch.sin(freq * v + phase[1]) * 2
    centre = uniform(-0.5, 0.5, 2, n)[:, :, None, None]
    width = uniform(0.2, 0.4, n)[:, None, None]
    blob = 4 * torch.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * width**2)) - 1
    pattern = torch.where((labels == 4)[:, None, None], checker, stripes)
    pattern = torch.where((labels == 5)[:, None, None], blob, pattern)
    colour = uniform(0.3, 1.0, n, 3) * torch.where(torch.rand(n, 3, generator=g) < 0.5, -1, 1)
    noise = torch.randn(n, 3, SIZE, SIZE, generator=g)
    return colour[:, :, None, None] * pattern[:, None] + 0.8 * noise, labels


def train(
    model: nn.Module, images, labels, steps: int, lr: float, batch: int = 64, seed: int = 1
) -> None:
    """A plain PyTorch loop: Adam, cross-entropy, the learning rate falling along a cosine; the
    batches drawn by ``seed``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(images), (batch,), generator=order)
        loss = F.cross_entropy(model(images[pick]), labels[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images, labels) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    hits = sum(
        int((model(x).argmax(1) == y).sum()) for x, y in zip(images.split(500), labels.split(500))
    )
    return 100 * hits / len(labels)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="custom-tnet.pt", help="Where the T-Net goes.")
    parser.add_argument(
        "--onnx", default=None, help="Where its ONNX export goes [default: OUTPUT with .onnx]."
    )
    parser.add_argument("--ratio", type=float, default=4.0, help="Whole-network compression ratio.")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="PyTorch threads (convolutions this small run fastest on one; on busy cores a "
        "second thread mostly waits) [default: 1].",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few images and steps (a smoke test)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_train, n_test, steps, tune_steps = (64, 32, 2, 2) if args.quick else (4000, 1200, 400, 200)
    onnx_path = args.onnx or str(Path(args.output).with_suffix(".onnx"))
    start = time.perf_counter()

    import tcompress
    from tcompress.train import recalibrate_batchnorm

    torch.manual_seed(0)
    train_images, train_labels = make_images(n_train, seed=0)
    test_images, test_labels = make_images(n_test, seed=1)
    dense = build()
    train(dense, train_images, train_labels, steps, lr=3e-3)
    print(
        f"dense network: {params(dense):,} parameters, "
        f"accuracy {accuracy(dense, test_images, test_labels):.1f}%"
    )

    # One tensor (stage, block, conv, f_in, f_out, h, w) for the twelve block kernels, its
    # ranks chosen for the whole network's compression ratio.
    tnet = tcompress.convert(dense, "tucker", arch=ARCH, family=FAMILY, ratio=args.ratio)
    s = tnet.summary
    print(
        f"T-Net: ranks {s['ranks']} of {s['mode_sizes']} ({', '.join(s['mode_names'])}), "
        f"{s['params_before']:,} -> {s['params_after']:,} parameters "
        f"({s['compression_ratio']:.2f}x), relative error of W {s['relative_error']:.3f}"
    )
    print(f"converted: accuracy {accuracy(tnet, test_images, test_labels):.1f}%")
    # BatchNorm statistics re-estimated on training images (no labels, no gradient).
    recalibrate_batchnorm(tnet, train_images[:512].split(64))
    print(
        f"converted, BatchNorm re-estimated: "
        f"accuracy {accuracy(tnet, test_images, test_labels):.1f}%"
    )

    # The T-Net is an nn.Module: the same loop fine-tunes it (every factor of W gets gradients).
    train(tnet, train_images, train_labels, tune_steps, lr=1e-3)
    print(
        f"fine-tuned: accuracy {accuracy(tnet, test_images, test_labels):.1f}%, "
        f"{params(dense) / params(tnet):.2f}x fewer parameters than the dense network"
    )

    tcompress.save(tnet, args.output)
    reloaded = tcompress.load(args.output, arch=ARCH).eval()  # arch= again: files import nothing
    with torch.no_grad():
        same = float((reloaded(test_images[:64]) - tnet(test_images[:64])).abs().max())
    print(f"wrote {args.output}; reloaded, max difference {same:.1e}")

    # The factorized form (1x1 -> small 3x3 -> 1x1 per convolution), validated by tcompress in
    # ONNX Runtime at batch 1 and 3, then checked here on the test images.
    tcompress.export_onnx(tnet, onnx_path, "factorized", input_size=SIZE)
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    with torch.no_grad():
        expected = tnet(test_images)
    got = torch.cat(
        [torch.from_numpy(session.run(None, {feed: x.numpy()})[0]) for x in test_images.split(200)]
    )
    onnx_accuracy = 100 * float((got.argmax(1) == test_labels).float().mean())
    print(
        f"wrote {onnx_path}: ONNX Runtime against PyTorch on {n_test} test images, max "
        f"|difference| {float((got - expected).abs().max()):.1e} (logits up to "
        f"{float(expected.abs().max()):.1f}), accuracy {onnx_accuracy:.1f}%"
    )
    print(f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
