"""The 3x T-Nets fine-tuned with the 5-minute recipe at more steps, another learning rate, or from
a better start.

Does the 3x gap to the original close with a longer budget, or at another learning rate
(``--lr``; ``--precision fp32`` where the CPU has no native bfloat16)? The 3x T-Net (the Tucker
ranks ``tcompress convert --ratio 3 --data synthetic`` picks) and the original are fine-tuned
alike with the README's recipe, its steps or rate changed. Does a start converged further end
higher? The CP T-Net of ``--ratio 3`` (rank 1223) converted with ``--refine N`` ALS sweeps (25 by
default) is fine-tuned with the recipe as it is. Every run is scored on 1,000 images of the test
split (``--splits val,test``: of both). Each run is one part (``--parts``), so that runs can go
side by side in separate processes; ``--merge`` joins the parts into ``--record``.

``--ranks`` fine-tunes a T-Net of other ranks the same way (a hand choice, or another ratio);
its row records them as ``given_ranks``. A Tucker T-Net is converted in the balanced form that
``convert`` gives by default (its part named ``-balanced``, its row ``balanced``);
``--orthonormal`` converts it as the earlier rows were, with the HOSVD's factors as they are.

    python benchmarks/bench_budget.py --model tucker --steps 1720 &
    python benchmarks/bench_budget.py --model original --steps 1720
    python benchmarks/bench_budget.py --model cp --refine 100
    python benchmarks/bench_budget.py --model tucker --steps 860 --lr 6e-3 --splits val,test
    python benchmarks/bench_budget.py --model mps --steps 860 --lr 6e-3 --precision fp32
    python benchmarks/bench_budget.py --model tucker --steps 860 --lr 6e-3 --distill-weight 0.5
    python benchmarks/bench_budget.py --model tucker --steps 860 --ranks 2,2,3,2,18,17,2,2
    python benchmarks/bench_budget.py --model tucker --steps 860 --precision fp32 --splits val,test
    python benchmarks/bench_budget.py --model tucker --ranks 2,4,3,2,29,32,2,2 --warmup 80
    python benchmarks/bench_budget.py --merge            # docs/records/budget.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import FIVE_MINUTE_CLI, write_json  # noqa: E402
from recipes import run_json as tcompress  # noqa: E402

#: The ranks ``--ratio 3 --data synthetic`` picks on the bundled model
#: (docs/records/rank_criteria.json).
TUCKER_3X = "2,2,3,2,31,32,2,2"
#: The rank ``--method cp --ratio 3`` takes on the bundled model.
CP_3X = "1223"
#: The MPS ranks of the comparison at the 5-minute recipe at 3x (docs/records/compare_recipe.json).
MPS_3X = "2,8,24,48,53,9,3"
RANKS_3X = {"tucker": TUCKER_3X, "cp": CP_3X, "mps": MPS_3X}


def recipe(steps: int, lr: float | None = None, precision: str | None = None) -> list[str]:
    """The README's recipe with its steps (and, given, its learning rate or precision) set."""
    out = list(FIVE_MINUTE_CLI)
    for flag, value in (("--steps", steps), ("--lr", lr), ("--precision", precision)):
        if value is not None:
            out[out.index(flag) + 1] = str(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tucker", "cp", "mps", "original"), default="tucker")
    parser.add_argument("--steps", type=int, default=1720)
    parser.add_argument("--refine", type=int, default=None, help="convert --refine")
    parser.add_argument(
        "--refine-data",
        action="store_true",
        help="convert --refine-data synthetic: the data-aware fit of the start (hosvd+fit)",
    )
    parser.add_argument(
        "--ranks", default=None, help="the T-Net's ranks instead of the 3x choice (another ratio)"
    )
    parser.add_argument(
        "--orthonormal",
        action="store_true",
        help="convert --orthonormal: the Tucker T-Net's HOSVD factors as they are (the rows "
        "before the balanced form; a row without 'balanced' is of that form)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None, help="the recipe's, 1.5e-3")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default=None, help="the recipe's, bf16"
    )
    parser.add_argument(
        "--distill-weight",
        type=float,
        default=None,
        help="also match the bundled original's heatmaps, this weight (finetune --distill-from)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="finetune --warmup: steps of linear warm-up"
    )
    parser.add_argument(
        "--splits", default="test", help="comma-separated splits to score: val, test or both"
    )
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--work", default="runs/budget")
    parser.add_argument("--parts", default="docs/records/budget")
    parser.add_argument("--merge", action="store_true", help="Join the parts; run nothing.")
    parser.add_argument("--record", default="docs/records/budget.json")
    args = parser.parse_args()

    from tcompress.models import pretrained_path

    if args.merge:
        rows = [json.loads(Path(p).read_text()) for p in sorted(glob.glob(f"{args.parts}/*.json"))]
        # The recipe as the README gives it; each row says the steps it ran.
        record = {"recipe": " ".join(FIVE_MINUTE_CLI), "rows": rows}
        write_json(args.record, record)
        print(json.dumps(record, indent=1))
        return
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.parts, exist_ok=True)
    refine = [] if args.refine is None else ["--refine", args.refine]
    if args.refine_data:
        refine += ["--refine-data", "synthetic"]
    if args.orthonormal:
        refine += ["--orthonormal"]
    stem = f"{args.model}-{args.steps}-s{args.seed}" + (
        f"-refine{args.refine}" if args.refine is not None else ""
    )
    if args.refine_data:
        stem += "-fit"
    if args.ranks:
        stem += "-r" + args.ranks.replace(",", "_")
    if args.lr:
        stem += f"-lr{args.lr:g}"
    if args.precision:
        stem += f"-{args.precision}"
    if args.distill_weight is not None:
        stem += f"-distill{args.distill_weight:g}"
    if args.warmup:
        stem += f"-warmup{args.warmup}"
    # The Tucker T-Net converts balanced unless --orthonormal; the earlier parts, of the
    # orthonormal form, keep their names.
    balanced = args.model == "tucker" and not args.orthonormal
    if balanced:
        stem += "-balanced"
    source = str(pretrained_path())
    row = {"model": args.model, "steps": args.steps, "seed": args.seed, "refine": args.refine}
    if args.ranks:
        row["given_ranks"] = args.ranks  # not the 3x choice: rows of another ratio say so
    if args.refine_data:
        row["start"] = "hosvd+fit"
    if args.lr or args.precision:
        row.update(lr=args.lr, precision=args.precision)
    if args.warmup:
        row["warmup"] = args.warmup
    extra = ["--warmup", args.warmup] if args.warmup else []
    if args.distill_weight is not None:
        # The teacher is always the checkpoint being compressed, the original included (for it
        # the same recipe is self-distillation from its own starting weights).
        extra += ["--distill-from", source, "--distill-weight", args.distill_weight]
        row["distill_weight"] = args.distill_weight
    if args.model != "original":
        converted = os.path.join(args.work, f"{stem}.pt")
        ranks = args.ranks or RANKS_3X[args.model]
        summary = tcompress(
            "convert", source, "--method", args.model, "--ranks", ranks, *refine,
            "-o", converted, "--force",
        )  # fmt: skip
        row.update(
            ranks=summary["ranks"],
            ratio=summary["compression_ratio"],
            relative_error=summary["relative_error"],
        )
        if balanced:
            row["balanced"] = summary["balanced"]
        source = converted
    tuned = os.path.join(args.work, f"{stem}-ft.pt")
    started = time.perf_counter()
    tcompress(
        "finetune", source, *recipe(args.steps, args.lr, args.precision), *extra,
        "--seed", args.seed,
        "-o", tuned, "--force",
    )  # fmt: skip
    row["minutes"] = (time.perf_counter() - started) / 60
    for split in args.splits.split(","):
        scored = tcompress(
            "evaluate", tuned, "--data", "synthetic", "--split", split, "-n", args.test_samples
        )  # fmt: skip
        row[f"{split}_pckh"] = scored["pckh"]["mean"]
    print(json.dumps(row), flush=True)
    write_json(f"{args.parts}/{stem}.json", row)


if __name__ == "__main__":
    main()
