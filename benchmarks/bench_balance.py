"""The Tucker T-Net fine-tuned from its balanced form against the HOSVD's orthonormal one.

``tcompress convert`` now scales every truncated factor by sqrt(D_k / R_k) and the core by the
inverse product (:meth:`tcompress.methods.tucker.Tucker.balance`): the same W, the core's entries
at the scale of W's. Both forms are fine-tuned with the README's 5-minute recipe by the
comparison at that recipe (``bench_compare_recipe.py --methods tucker``, the ranks chosen on the
data, 1,000 test images): the balanced rows are the comparison's own parts
(``docs/records/compare_recipe/``); the orthonormal rows are the parts the same command wrote
before balancing was the default, kept in ``docs/records/balance/orthonormal/`` (to make them
again: ``git checkout e904c61``, then the same command). A seed draws the same batches for both
forms, and both are scored on the same images, so the difference is paired image by image.

    python benchmarks/bench_compare_recipe.py --ratio 3 --methods tucker --seeds 0   # and 1, 2
    python benchmarks/bench_balance.py               # docs/records/balance.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import write_json  # noqa: E402


def arm(paths: list[str]):
    """The merged report of the parts' Tucker rows (each part reduced to them)."""
    from tcompress.experiments.compare import CompareReport, merge_reports

    reports = []
    for path in paths:
        report = CompareReport.from_dict(json.loads(Path(path).read_text()))
        rows = [r for r in report.rows if r.method == "tucker"]
        if rows:
            report.rows = rows
            reports.append(report)
    if not reports:
        sys.exit(f"no Tucker rows in {len(paths)} part(s)")
    return merge_reports(reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--balanced", default="docs/records/compare_recipe")
    parser.add_argument("--orthonormal", default="docs/records/balance/orthonormal")
    parser.add_argument("--baseline", default="docs/records/compare_recipe.json")
    parser.add_argument("--record", default="docs/records/balance.json")
    args = parser.parse_args()

    from tcompress.experiments.compare import row_differences

    parts = {
        form: sorted(glob.glob(os.path.join(folder, "*.json")))
        for form, folder in (("balanced", args.balanced), ("orthonormal", args.orthonormal))
    }
    balanced, orthonormal = arm(parts["balanced"]), arm(parts["orthonormal"])
    if balanced.counts != orthonormal.counts:
        sys.exit("the two forms were scored on different images; expected the same test split")
    original = next(
        r for r in json.loads(Path(args.baseline).read_text())["rows"]
        if r["method"] == "uncompressed"
    )  # fmt: skip
    pairs = [
        (b, o, b.target) for b in balanced.rows for o in orthonormal.rows if o.target == b.target
    ]
    rows = []
    for (b, o, _), difference in zip(pairs, row_differences(balanced, pairs)):
        row = {
            "target": b.target,
            "ranks": list(b.ranks),
            "balanced": {"before": asdict(b.before), "after": asdict(b.after)},
            "orthonormal": {"before": asdict(o.before), "after": asdict(o.after)},
            "difference": difference.to_dict(),
            "gap_balanced": original["after"]["mean"] - b.after.mean,
            "gap_orthonormal": original["after"]["mean"] - o.after.mean,
        }
        rows.append(row)
        print(
            f"{b.target:g}x {','.join(map(str, b.ranks))}: orthonormal {o.after.mean:.1f} "
            f"{[round(x, 1) for x in o.after.seeds]} -> balanced {b.after.mean:.1f} "
            f"{[round(x, 1) for x in b.after.seeds]}: {difference.mean:+.1f} "
            f"[{difference.low:+.1f}, {difference.high:+.1f}]; gap to the original "
            f"{row['gap_orthonormal']:.1f} -> {row['gap_balanced']:.1f}"
        )
    write_json(
        args.record,
        {
            "settings": balanced.settings.to_dict(),
            "original": original["after"],
            "rows": rows,
            "parts": {form: [os.path.basename(p) for p in paths] for form, paths in parts.items()},
        },
    )
    print(f"wrote {args.record}")


if __name__ == "__main__":
    main()
