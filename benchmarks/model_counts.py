"""The counts the README quotes: parameters of conversions, ratios ``--ratio`` reaches, sizes.

* The paper configuration (``random_hourglass()``: 4 stacks, depth 4, 2 convolutions per block,
  128 features, 16 joints; seeded random weights, which do not change a count): its parameters,
  those of W and its block convolutions, and for each rank choice of the README's conversion
  table the parameters of W and of the whole network after conversion, with the ratio.
* ``--ratio`` on that network, Tucker and MPS, at the targets 2, 4 and 8: the ratio reached.
* The bundled model (``tcompress.models.pretrained()``): its parameters, those of W, the size
  of its checkpoint file, and the median head size (heatmap pixels) of the 500 held-out synthetic
  images its PCKh is reported on (the training record's ``data.val_samples``).

Counts are those of ``tcompress convert --json`` (``tensor_params_*``, ``params_*``,
``compression_ratio``); nothing here is timed.

    python benchmarks/model_counts.py [--record docs/records/models.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import tcompress
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
    import tcompress

import torch  # noqa: E402

from tcompress.checkpoint import atomic_write  # noqa: E402
from tcompress.data import SyntheticPose  # noqa: E402
from tcompress.models import pretrained, pretrained_info, pretrained_path, random_hourglass  # noqa: E402

#: The rank choices of the README's conversion table.
CHOICES = (
    ("tucker", (4, 4, 3, 2, 64, 64, 3, 3)),
    ("tucker", (4, 4, 3, 2, 32, 32, 3, 3)),
    ("mps", (4, 16, 48, 96, 64, 9, 3)),
)
TARGETS = (2.0, 4.0, 8.0)


def counts(summary: dict) -> dict:
    return {
        "ranks": list(summary["ranks"]),
        "tensor_params": summary["tensor_params_after"],
        "params": summary["params_after"],
        "compression_ratio": summary["compression_ratio"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", type=Path, default=ROOT / "docs" / "records" / "models.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    paper = random_hourglass(0)
    full = tcompress.convert(paper, method="tucker", ranks="full").summary
    record = {
        "paper": {
            "config": paper.config.to_dict(),
            "params": full["params_before"],
            "tensor_params": full["tensor_params_before"],
            "mode_sizes": list(full["mode_sizes"]),
            "block_convolutions": math.prod(full["mode_sizes"][:4]),
            "conversions": [],
            "ratio_targets": {},
        }
    }
    for method, ranks in CHOICES:
        summary = tcompress.convert(paper, method=method, ranks=ranks).summary
        record["paper"]["conversions"].append({"method": method, **counts(summary)})
    for method in ("tucker", "mps"):
        reached = record["paper"]["ratio_targets"][method] = []
        for target in TARGETS:
            summary = tcompress.convert(paper, method=method, ratio=target).summary
            reached.append({"target": target, **counts(summary)})
    bundled = pretrained()
    summary = tcompress.convert(bundled, method="tucker", ranks="full").summary
    record["bundled"] = {
        "config": bundled.config.to_dict(),
        "params": summary["params_before"],
        "tensor_params": summary["tensor_params_before"],
        "file_bytes": pretrained_path().stat().st_size,
    }
    info = pretrained_info()
    val = SyntheticPose(
        info["data"]["val_samples"], info["image_size"], info["heatmap_size"], split="val"
    )
    record["bundled"]["val_samples"] = len(val)
    record["bundled"]["val_head_size_median"] = statistics.median(
        float(val[i]["head_size"]) for i in range(len(val))
    )
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(args.record, lambda tmp: Path(tmp).write_text(text))
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
