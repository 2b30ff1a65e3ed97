"""Images per second of the MPII training data path: cheap JPEG crops against the previous path.

The data set is a folder of generated photo-like 1280 x 720 JPEG files (quality 90, 4:2:0) and an
``annotations.json`` of 8 people per image, with MPII-like person scales (``scale_provided``
1.2-4, crops of 225-1250 source pixels: shrinks of 0.9-4.9). Each sample is what training takes:
an augmented ``MPIIDataset`` item (256 x 256 crop, 64 x 64 heatmaps) through a ``DataLoader``
with 0 and 2 workers.

- ``new``: this checkout's ``MPIIDataset`` on the JPEG files (:func:`read_crop`: reduced-scale
  JPEG decoding, only the crop's neighbourhood jittered, normalised and warped);
- ``new-png``: the same on PNG copies of the images (Pillow decodes the whole PNG);
- ``old``: the previous implementation, loaded from git (``--old-rev``, by default the last
  revision holding ``tcompress/data/png.py``): it reads PNG only, so it gets the PNG copies (as
  written by Pillow, the way a user converting JPEG files would write them), decodes each whole
  image with its own PNG decoder, jitters and normalises the whole image, then warps;
- ``old-own-png``: the same on PNG copies written by the previous writer, whose single "Up"
  filter is the previous decoder's fast case (a user of the previous code could have prepared
  the data set that way).

Also times decoding one 256 x 256 PNG: Pillow against the previous PNG decoder (on the same
Pillow-written file, and on a file of its own writer, whose single "Up" filter is its fast case).
Rates are over whole passes (worker start-up included), after one warm-up sample, the best of
``--rounds`` interleaved rounds; decoding times are medians.

Usage::

    python benchmarks/bench_data.py [--images 40] [--samples 320] [--old-samples 48] \
        [--rounds 2] [--threads 1] [--out docs/records/data_path.json] [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Subset

ROOT = Path(__file__).resolve().parents[1]
try:
    import tcompress  # noqa: F401
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(ROOT))

from tcompress.checkpoint import atomic_write  # noqa: E402
from tcompress.data import MPIIDataset, read_image, write_image  # noqa: E402

#: Modules of the previous data path, loaded from git as one package.
OLD_MODULES = ("png", "images", "mpii", "transforms", "targets", "skeleton")
OLD_PACKAGE = "tcompress_previous_data"
HEIGHT, WIDTH = 720, 1280


def photo(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Photo-like uint8 RGB: a smooth colour field, hard-edged shapes, mild sensor noise."""
    field = torch.from_numpy(rng.random((1, 3, 9, 16), dtype=np.float32))
    image = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=False)[0]
    image = image.clamp(0, 1).permute(1, 2, 0).numpy() * 255
    ys, xs = np.mgrid[:height, :width]
    for _ in range(25):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(8, height / 6)
        image[(xs - cx) ** 2 + (ys - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 5, image.shape)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def person(rng: np.random.Generator, image: str) -> dict:
    """An MPII-style entry: a person of scale 1.2-4 (240-800 px tall) somewhere in the image."""
    scale = float(rng.uniform(1.2, 4.0))
    center = [float(rng.uniform(0.2, 0.8) * WIDTH), float(rng.uniform(0.3, 0.7) * HEIGHT)]
    joints = np.asarray(center) + rng.normal(0, 40 * scale, (16, 2))
    rows = [[float(x), float(y), 1] for x, y in np.clip(joints, 1, [WIDTH - 1, HEIGHT - 1])]
    return {
        "img_paths": image,
        "joint_self": rows,
        "objpos": center,
        "scale_provided": scale,
        "isValidation": 0,
    }


def make_data(folder: Path, count: int, seed: int) -> dict:
    """``jpeg/`` and ``png/`` folders of the same images, each with its annotations.json."""
    rng = np.random.default_rng(seed)
    sizes = {"jpeg": [], "png": []}
    entries = {"jpeg": [], "png": []}
    for kind in entries:
        (folder / kind).mkdir()
    for i in range(count):
        pixels = photo(HEIGHT, WIDTH, rng)
        people = [person(rng, f"{i:04d}") for _ in range(8)]
        for kind, suffix in (("jpeg", ".jpg"), ("png", ".png")):
            path = folder / kind / f"{i:04d}{suffix}"
            write_image(path, pixels, **({"quality": 90} if kind == "jpeg" else {}))
            sizes[kind].append(path.stat().st_size)
            entries[kind] += [dict(p, img_paths=p["img_paths"] + suffix) for p in people]
    for kind, items in entries.items():
        (folder / kind / "annotations.json").write_text(json.dumps(items))
    return {kind: statistics.mean(s) / 1024 for kind, s in sizes.items()}


def own_png_copies(folder: Path, write_png) -> float:
    """``png-own/``: the PNG copies rewritten by the previous writer (one "Up" filter for every
    row: the previous decoder's fast case); returns their mean size in KB."""
    (folder / "png-own").mkdir()
    sizes = []
    for path in sorted((folder / "png").glob("*.png")):
        with Image.open(path) as image:
            write_png(folder / "png-own" / path.name, np.asarray(image))
        sizes.append((folder / "png-own" / path.name).stat().st_size)
    (folder / "png-own" / "annotations.json").write_bytes(
        (folder / "png" / "annotations.json").read_bytes()
    )
    return statistics.mean(sizes) / 1024


def previous_revision(rev: str | None) -> str:
    """``rev``, or the last revision that still holds ``tcompress/data/png.py``."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    if rev is None:
        if git("cat-file", "-e", "HEAD:tcompress/data/png.py").returncode == 0:
            rev = "HEAD"
        else:
            removed = git("rev-list", "-n", "1", "HEAD", "--", "tcompress/data/png.py").stdout
            if not removed.strip():
                sys.exit("no revision in this repository's history holds tcompress/data/png.py")
            rev = removed.strip() + "^"
    done = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if done.returncode:
        sys.exit(f"--old-rev {rev}: {done.stderr.strip()}")
    return done.stdout.strip()


def load_previous(rev: str, folder: Path):
    """The previous data modules as package ``OLD_PACKAGE``, importing each other only."""
    package = folder / OLD_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    pattern = re.compile(rf"\btcompress\.data\.({'|'.join(OLD_MODULES)})\b")
    for name in OLD_MODULES:
        source = subprocess.run(
            ["git", "show", f"{rev}:tcompress/data/{name}.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (package / f"{name}.py").write_text(pattern.sub(rf"{OLD_PACKAGE}.\1", source))
    sys.path.insert(0, str(folder))
    # DataLoader workers started by spawn or forkserver import the package afresh.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(folder), os.environ.get("PYTHONPATH")])
    )
    return importlib.import_module(f"{OLD_PACKAGE}.mpii"), importlib.import_module(
        f"{OLD_PACKAGE}.png"
    )


def rate(data, samples: int, workers: int, batch: int) -> float:
    """Samples per second over one pass of a DataLoader (worker start-up included)."""
    data[0]  # warm-up in this process
    subset = Subset(data, range(min(samples, len(data))))
    loader = DataLoader(subset, batch_size=batch, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(b["image"]) for b in loader)
    return count / (time.perf_counter() - start)


def pillow_decode(path: Path) -> np.ndarray:
    """Pillow alone: the uint8 pixels, as the previous decoder returned them."""
    with Image.open(path) as image:
        return np.asarray(image)


def decode_ms(read, path: Path, repeats: int) -> float:
    read(path)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read(path)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="1280 x 720 images generated")
    parser.add_argument("--samples", type=int, default=320, help="samples per pass, new path")
    parser.add_argument("--old-samples", type=int, default=48, help="samples per pass, old path")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    # Torch ops on single 256 x 256 crops gain nothing from threads (DataLoader workers run one
    # each); with 0 workers, more threads only add hand-over costs, worst on a busy machine.
    parser.add_argument("--threads", type=int, default=1, help="torch threads, 0 workers")
    parser.add_argument("--old-rev", help="git revision of the old path [default: see above]")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved passes; best kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "records" / "data_path.json"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rev = previous_revision(args.old_rev)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        old_mpii, old_png = load_previous(rev, folder)
        kilobytes = make_data(folder, args.images, args.seed)
        kilobytes["png-own"] = own_png_copies(folder, old_png.write_png)
        sets = {
            "new": MPIIDataset(folder / "jpeg", folder / "jpeg" / "annotations.json", seed=1),
            "new-png": MPIIDataset(folder / "png", folder / "png" / "annotations.json", seed=1),
            "old": old_mpii.MPIIDataset(
                folder / "png", folder / "png" / "annotations.json", seed=1
            ),
            "old-own-png": old_mpii.MPIIDataset(
                folder / "png-own", folder / "png-own" / "annotations.json", seed=1
            ),
        }
        counts = {"new": args.samples, "new-png": 2 * args.old_samples}
        counts.update({"old": args.old_samples, "old-own-png": args.old_samples})
        passes = {(name, str(w)): [] for name in sets for w in args.workers}
        for _ in range(args.rounds):  # interleaved, so that a busy spell hits every setting
            for name, workers in passes:
                data = sets[name]
                passes[name, workers].append(rate(data, counts[name], int(workers), args.batch))
        rates = {name: {} for name in sets}
        for (name, workers), values in passes.items():
            rates[name][workers] = max(values)
        small = photo(256, 256, np.random.default_rng(args.seed + 1))
        write_image(folder / "small.png", small)
        old_png.write_png(folder / "small-own.png", small)
        decode = {
            "pillow": decode_ms(pillow_decode, folder / "small.png", 50),
            "read_image": decode_ms(read_image, folder / "small.png", 50),
            "old_decoder": decode_ms(old_png.read_png, folder / "small.png", 20),
            "old_decoder_own_png": decode_ms(old_png.read_png, folder / "small-own.png", 20),
        }
    record = {
        "images": args.images,
        "image_shape": [HEIGHT, WIDTH],
        "mean_file_kb": kilobytes,
        "image_size": 256,
        "heatmap_size": 64,
        "batch_size": args.batch,
        "threads": args.threads,
        "torch_threads_per_worker": 1,
        "samples": counts,
        "rounds": args.rounds,
        "old_rev": rev,
        "images_per_second": rates,
        "new_over_old": {w: rates["new"][w] / rates["old"][w] for w in rates["new"]},
        "new_over_old_own_png": {
            w: rates["new"][w] / rates["old-own-png"][w] for w in rates["new"]
        },
        "decode_256_png_ms": decode,
        "pillow": Image.__version__,
        "cpu_count": os.cpu_count(),
    }
    if args.out:
        text = json.dumps(record, indent=1) + "\n"
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print(
        f"MPII training data path, images/s: {args.images} generated {WIDTH}x{HEIGHT} images "
        f"(JPEG {kilobytes['jpeg']:.0f} KB, PNG {kilobytes['png']:.0f} KB on average), 256x256 "
        f"crops, 64x64 heatmaps, batch {args.batch}, {args.threads} threads, best of "
        f"{args.rounds} interleaved rounds; old = {rev[:10]}"
    )
    for name, row in rates.items():
        print(f"{name:11s} " + ", ".join(f"{w} workers {v:7.1f}" for w, v in row.items()))
    for key, label in (("new_over_old", "old"), ("new_over_old_own_png", "old-own-png")):
        ratios = record[key].items()
        print(f"new / {label}: " + ", ".join(f"{w} workers {v:.1f}x" for w, v in ratios))
    print(
        "decoding a 256x256 PNG (median): Pillow {pillow:.2f} ms (read_image, with the float "
        "conversion: {read_image:.2f} ms), old decoder {old_decoder:.1f} ms (on its own "
        "writer's PNG: {old_decoder_own_png:.1f} ms)".format(**decode)
    )
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
