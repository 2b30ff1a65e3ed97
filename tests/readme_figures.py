"""Every figure the README publishes, and the record each one comes from.

Tables are rendered from their records as the README prints them; phrases of prose name each
measured value's record entry and its format. Phrases declared as :class:`Settings` hold numbers
that are not measurements. :mod:`tests.readme_check` says how they are checked; when a benchmark
writes a new record, ``python -m tests.readme_figures`` prints the tables to paste.
"""

from __future__ import annotations

import functools
import math
import sys

from tests.readme_check import ROOT, Figure, Settings, Table, record

# ------------------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------------------


def f0(x: float) -> str:
    return f"{x:.0f}"


def f1(x: float) -> str:
    return f"{x:.1f}"


def f2(x: float) -> str:
    return f"{x:.2f}"


def f3(x: float) -> str:
    return f"{x:.3f}"


def n(x: int) -> str:
    """A count with thousands separators."""
    return f"{x:,}"


def sci(x: float) -> str:
    """1.5e-3 as the README writes it (no exponent padding, no trailing zeros)."""
    mantissa, exponent = f"{x:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def ranks(values) -> str:
    return ",".join(map(str, values))


# ------------------------------------------------------------------------------------------------
# Record look-ups
# ------------------------------------------------------------------------------------------------


def finetune_run(name: str) -> dict:
    return record("finetune")["runs"][name]


def gap(name: str) -> float:
    """Points between the original fine-tuned alike and run ``name``, both fine-tuned."""
    return finetune_run("dense")["after"] - finetune_run(name)["after"]


def compare_row(method: str, target: float | None, name: str = "compare") -> dict:
    """The one row of ``method`` at ``target`` in a comparison record (``compare`` or
    ``compare_recipe``)."""
    (row,) = [r for r in record(name)["rows"] if (r["method"], r["target"]) == (method, target)]
    return row


def deployed(model: str, precision: str, form: str, fmt: str = "onnx") -> dict:
    rows = record("deployment")["paper"]["rows"]
    return next(
        r
        for r in rows
        if (r["model"], r["precision"], r["form"], r["format"]) == (model, precision, form, fmt)
    )


def size(row: dict) -> float:
    """A file's size as a fraction of the float32 original's."""
    return 1 / row["size_ratio"]


def int8_drop(subject: str) -> float:
    """PCKh points the default INT8 setting (uint8, percentile) lost on the bundled model."""
    return record("int8_choices")["accuracy_bundled"][subject]["int8"]["uint8 percentile"]["drop"]


def validation_margins() -> tuple[float, float]:
    """At the default atol 1e-6 + rtol 1e-5: the worst correct export as a fraction of the
    tolerance, and the smallest difference a fold without eps makes, in tolerances."""
    summary = record("shared_factors")["validation_tolerance"]["summary"]["1e-6, 1e-5"]
    worst = 1 / summary["correct: margin (tolerance / worst diff)"]
    eps = min(v for k, v in summary.items() if k.startswith("eps drop"))
    return worst, eps


def bundled_evaluation(step: int) -> float:
    evaluations = record("bundled-training")["result"]["evaluations"]
    return next(e["pckh"] for e in evaluations if e["step"] == step)


def ranks_row(choice: str, target: float | None = None, given: str | None = None) -> dict:
    rows = record("ranks")["rows"]
    return next(
        r
        for r in rows
        if r["choice"] == choice
        and r["target"] == target
        and (given is None or ranks(r["ranks"]) == given)
    )


def same_to_two_decimals() -> str:
    """The public evaluation's groups and Mean equal tcompress's rounded to its two decimals;
    the number of people scored."""
    r = record("against_public_eval")
    if any(round(v, 2) != r["public"][k] for k, v in r["tcompress"].items()):
        raise AssertionError("tcompress and the public script differ in against_public_eval.json")
    return n(r["people"])


def head_size_quartiles() -> str:
    low, high = record("head_size_rules")["estimate_over_official"]["quartiles"]
    if f3(low) != f3(high):
        raise AssertionError("the quartiles differ at three decimals")
    return f3(low)


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def bundled_training_table() -> list[str]:
    run = record("bundled-training")["result"]
    steps = [e["step"] for e in run["evaluations"]]
    loss = {h["step"]: h["loss"] for h in run["history"]}
    return [
        "| step | " + " | ".join(n(s) for s in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
        "| PCKh@0.5 (%) | " + " | ".join(f1(e["pckh"]) for e in run["evaluations"]) + " |",
        "| training loss, mean of the last 50 steps (x1e-3) | "
        + " | ".join(f2(loss[s] * 1e3) for s in steps)
        + " |",
    ]


FINETUNE_ROWS = {  # run -> (model, conversion)
    "dense": ("original, fine-tuned alike", None),
    "tnet-2x": ("T-Net", "convert-2x"),
    "tnet-3x": ("T-Net", "convert-3x"),
    "tnet-3x-distill": ("T-Net, distillation only, unlabeled PNGs", "convert-3x"),
}


def finetune_table() -> list[str]:
    r = record("finetune")
    lines = [
        "| model | ranks | compression | PCKh converted | PCKh fine-tuned | gap to the original "
        "| steps | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (label, conversion) in FINETUNE_ROWS.items():
        run = r["runs"][name]
        steps = r["distill_steps"] if name.endswith("distill") else r["steps"]
        if conversion is None:
            given, ratio, difference = "-", "1x", "-"
        else:
            c = r[conversion]
            given, ratio, difference = c["ranks"], f"{c['ratio']:.2f}x", f1(gap(name))
        lines.append(
            f"| {label} | {given} | {ratio} | {f1(run['before'])} | {f1(run['after'])} | "
            f"{difference} | {steps} | {f1(run['minutes'])} |"
        )
    return lines


def recipe_table() -> list[str]:
    """The comparison at the 5-minute recipe, one row per method (docs/records/compare_recipe)."""
    return _compare_rows(record("compare_recipe")["rows"], seeds=True)


def recipe_differences() -> list[str]:
    """Its paired differences, as ``tcompress compare`` prints them."""
    lines = ["| target | row | minus | difference [95% interval] |", "|---|---|---|---|"]
    for d in _recipe_differences():
        lines.append(
            f"| {d.ratio:g}x | {d.a} | {d.b} | {d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}] |"
        )
    return lines


@functools.cache
def _recipe_differences() -> tuple:
    """The paired differences of the comparison at the 5-minute recipe (computed once: every
    check of the README asks for them again)."""
    from tcompress.experiments.compare import CompareReport, paired_differences

    return tuple(paired_differences(CompareReport.from_dict(record("compare_recipe"))))


def _difference(a: str, b: str, ratio: float):
    """One paired difference of the comparison at the 5-minute recipe: ``a`` minus ``b``."""
    (d,) = [d for d in _recipe_differences() if (d.a, d.b, d.ratio) == (a, b, ratio)]
    return d


def recipe_difference(a: str, b: str, ratio: float) -> float:
    """The mean of :func:`_difference`."""
    return _difference(a, b, ratio).mean


def recipe_gaps(ratio: float) -> dict[str, float]:
    """Each method's gap to the original fine-tuned alike at ``ratio`` (original minus it)."""
    methods = [r["method"] for r in record("compare_recipe")["rows"] if r["target"] == ratio]
    return {m: -recipe_difference(m, "uncompressed", ratio) for m in methods}


LAYERWISE = ("layerwise-cp", "layerwise-tucker", "tai")


def _spread(a: str, b: str, ratio: float) -> tuple[str, str, str]:
    """``a`` minus ``b`` at ``ratio``, and its interval, as printed: 0.6, +0.1, +1.2."""
    d = _difference(a, b, ratio)
    return f1(d.mean), f"{d.low:+.1f}", f"{d.high:+.1f}"


def _and(values) -> str:
    """0, 1 and 2."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def compare_table() -> list[str]:
    return _compare_rows(record("compare")["rows"])


def _compare_rows(rows: list[dict], seeds: bool = False) -> list[str]:
    """The comparison's rows; with ``seeds``, how many seeds each row's accuracy after pools."""

    def accuracy(a: dict) -> str:
        return f"{f1(a['mean'])} [{f1(a['low'])}, {f1(a['high'])}]"

    lines = [
        "| method | target | ranks | parameters | ratio | PCKh before | PCKh after "
        + ("| seeds " if seeds else "")
        + "| ONNX speed-up |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if seeds else ""),
    ]
    # merged from processes that each ran some of the ratios: in the table, by target
    for r in sorted(rows, key=lambda r: r["target"] or 0):
        target = "-" if r["target"] is None else f"{r['target']:g}x"
        given = "-" if r["ranks"] is None else ranks(r["ranks"])
        lines.append(
            f"| {r['method']} | {target} | {given} | {n(r['params'])} | {r['ratio']:.2f}x | "
            f"{accuracy(r['before'])} | {accuracy(r['after'])} | "
            + (f"{len(r['hits'])} | " if seeds else "")
            + f"{r['onnx_speedup']:.2f}x ({r['onnx_form']}) |"
        )
    return lines


#: Hand-picked rows of the rank table: ranks -> (the ratio they stand beside, the choice).
GIVEN_RANKS = {"2,2,3,2,32,32,2,2": ("3x", "depth rank 2, 2x2 kernels")}


def ranks_table() -> list[str]:
    lines = [
        "| target | choice | ranks | ratio | relative error of W | PCKh converted |",
        "|---|---|---|---|---|---|",
    ]
    for r in record("ranks")["rows"]:
        if r["choice"] == "given":
            target, choice = GIVEN_RANKS[ranks(r["ranks"])]
        else:
            target = f"{r['target']:g}x"
            choice = f"`--ratio {r['target']:g}`" if r["choice"] == "ratio" else r["choice"]
        lines.append(
            f"| {target} | {choice} | {ranks(r['ranks'])} | {r['compression_ratio']:.2f}x | "
            f"{r['relative_error']:.4f} | {f1(r['pckh'])}% |"
        )
    return lines


#: The candidate rank sets of the data-aware table, and how each came about.
CANDIDATE_LABELS = {
    "2,4,3,2,31,32,2,1": "`--ratio 3` (error bound)",
    "2,4,3,2,31,32,1,2": "output costs alone",
    "2,2,3,2,32,32,2,2": "hand: depth rank 2, 2x2 kernels",
    "1,4,3,2,32,32,2,2": "stack rank 1",
    "2,4,3,1,32,32,2,2": "block rank 1",
}


def _criteria() -> dict:
    return record("rank_criteria")


def _auto(ratio: str) -> dict:
    return _criteria()["auto"][ratio]


def _criteria_correlations() -> tuple[str, ...]:
    """Spearman's correlation of the agreement (alike for the converted PCKh), the error of W
    and the summed output costs with the fine-tuned validation PCKh of the candidates."""
    rho = _criteria()["spearman_with_val_pckh"]
    if f1(rho["agreement"]) != f1(rho["converted_pckh"]):
        raise AssertionError(f"the agreement and the converted PCKh correlate apart: {rho}")
    return f1(rho["agreement"]), f1(rho["weight_error"]), f1(rho["output_cost"])


def _stack_rank_one() -> str:
    """Stack rank 1 converts lowest but one and fine-tunes above the error bound's choice."""
    stack, bound = (
        _criteria()["candidates"][k] for k in ("1,4,3,2,32,32,2,2", "2,4,3,2,31,32,2,1")
    )
    if stack["val_pckh"] <= bound["val_pckh"]:
        raise AssertionError("stack rank 1 no longer fine-tunes above the error bound's choice")
    return f1(stack["converted_pckh"])


def criteria_table() -> list[str]:
    lines = [
        "| ranks | chosen by | ratio | ‖W − Ŵ‖/‖W‖ | output cost | output error, fitted | "
        "agreement | PCKh converted | PCKh fine-tuned, val | test |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def tuned(row, key):
        return f1(row[key]) if key in row else "-"

    for name, label in CANDIDATE_LABELS.items():
        r = _criteria()["candidates"][name]
        lines.append(
            f"| {name} | {label} | {f2(r['ratio'])}x | {f3(r['weight_error'])} | "
            f"{f3(r['output_cost'])} | {f3(r['refined_error'])} | {f3(r['agreement'])} | "
            f"{f1(r['converted_pckh'])} | {tuned(r, 'val_pckh')} | {tuned(r, 'test_pckh')} |"
        )
    auto = _auto("3")
    lines.append(
        f"| {ranks(auto['ranks'])} | `--ratio 3 --data synthetic` | {f2(auto['ratio'])}x | - | - "
        f"| - | {f3(auto['rank_search']['agreement'])} | - | {f1(auto['val_pckh'])} | "
        f"{f1(auto['test_pckh'])} |"
    )
    original = _criteria()["original"]
    lines.append(
        f"| - | original, fine-tuned alike | 1.00x | - | - | - | - | - | "
        f"{f1(original['val_pckh'])} | {f1(original['test_pckh'])} |"
    )
    return lines


def conversion_table() -> list[str]:
    lines = [
        "| method | ranks | W parameters | whole network | ratio |",
        "|---|---|---|---|---|",
    ]
    for c in record("models")["paper"]["conversions"]:
        label = {"tucker": "Tucker", "mps": "MPS"}[c["method"]]
        lines.append(
            f"| {label} | {ranks(c['ranks'])} | {n(c['tensor_params'])} | {n(c['params'])} | "
            f"{c['compression_ratio']:.2f}x |"
        )
    return lines


def bench_export_tables() -> list[list[str]]:
    """The tables ``python benchmarks/bench_export.py --markdown`` prints from the record."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_export
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    text = bench_export.markdown(record("deployment"))
    return [block.strip().splitlines() for block in text.split("\n\n") if block.strip()]


def deployment_table() -> list[str]:
    return bench_export_tables()[0]


TENSOR_RING_ROWS = {
    "mps --ratio 3": "MPS, `--ratio 3`",
    "tr ring bond 2": "tensor ring, ring bond 2",
}


def tensor_ring_table() -> list[str]:
    """The table of docs/tensor_ring.md (the best fine-tuned PCKh in bold)."""
    runs = record("tensor_ring")["runs"]
    best = max(r["pckh_finetuned"] for r in runs.values())
    lines = [
        "| T-Net | ranks | parameters | ratio | ‖W − Ŵ‖/‖W‖ | PCKh converted | PCKh fine-tuned |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        after = f1(r["pckh_finetuned"])
        after = f"**{after}**" if r["pckh_finetuned"] == best else after
        lines.append(
            f"| {TENSOR_RING_ROWS[name]} | {ranks(r['ranks'])} | {n(r['params_after'])} | "
            f"{r['compression_ratio']:.2f}x | {f3(r['relative_error'])} | "
            f"{f1(r['pckh_converted'])} | {after} |"
        )
    return lines


#: docs/deployment.md's INT8 settings table: the label of each timed variant of the record
#: docs/records/int8_choices.json.
INT8_VARIANTS = {
    "uint8 minmax": "uint8 activations, MinMax",
    "int8 minmax": "int8 activations, MinMax",
    "uint8 minmax, first + score convs float": "uint8, first and score convolutions float",
    "uint8 minmax, heads + scores float": "uint8, heads and scores float",
    "uint8 minmax, per-tensor weights": "uint8, per-tensor weight scales",
    "uint8 minmax, reduce_range": "uint8, reduce_range (7-bit weights)",
}


def int8_settings_rows() -> list[str]:
    """The timed rows of docs/deployment.md's INT8 settings table (speed on the paper
    configuration, mean PCKh drop over the three bundled subjects)."""
    r = record("int8_choices")
    speed, drop = r["speed_paper_configuration"]["int8"], r["findings"]["mean_abs_drop_by_variant"]
    return [
        f"| {label} | {speed['original'][k]['speedup_vs_fp32_original']:.2f}x | "
        f"{speed['tnet'][k]['speedup_vs_fp32_original']:.2f}x | "
        f"{speed['tnet'][k]['speedup_vs_int8_original_same_settings']:.2f}x | {f2(drop[k])} |"
        for k, label in INT8_VARIANTS.items()
    ]


# ------------------------------------------------------------------------------------------------
# The README, section by section
# ------------------------------------------------------------------------------------------------

SETUP = "## Set-up"
MPII = "## Your bearpaw checkpoint and MPII"
METHOD = "## The method"
COMMANDS = "## Command line"
DEPLOYMENT = "## Deployment: ONNX"
WHICH_FILE = "### Which file to deploy"
TRAINING = "## Fine-tuning, evaluation and data"
BUNDLED = "### The bundled model"
FINETUNE = "### Fine-tuning after compression"
COMPARE = "### One tensor against layer-wise decompositions"
RECIPE_COMPARE = "### The comparison at the 5-minute recipe"
RANKS = "### Choosing ranks"
DATA_RANKS = "### Ranks chosen on data"
TRAIN_STEP = "### Training cost"
CONVERSION = "### Conversion"


def _paper_config() -> dict:
    return record("models")["paper"]["config"]


def _bundled() -> dict:
    return record("models")["bundled"]


def _training() -> dict:
    return record("bundled-training")


def _vector_units(isa: list[str]) -> str:
    """A speed record's CPU as the README names it: whether it has AVX512."""
    return "a CPU with AVX512" if "avx512_f" in isa else "a CPU with AVX2 and no AVX512"


def _convert_speed(method: str) -> dict:
    """The row of ``method`` in the conversion speed record."""
    (row,) = [r for r in record("convert_speed")["rows"] if r["method"] == method]
    return row


def _compare() -> dict:
    return record("compare")["settings"]


def _tensor_ring_after(name: str) -> str:
    return f1(record("tensor_ring")["runs"][name]["pckh_finetuned"])


def _ratio_reached(method: str) -> list[str]:
    return [f2(r["compression_ratio"]) for r in record("models")["paper"]["ratio_targets"][method]]


def _trimmed_range() -> tuple[str, str]:
    after = [r["after"]["mean"] for r in record("compare")["rows"] if r["method"] == "trimmed"]
    return f0(math.floor(min(after))), f0(math.ceil(max(after)))


def _bias(name: str) -> str:
    return f1(record("bias_correction")["after"][name])


#: The 5-minute recipe's learning rate, and the higher one docs/budget.md fine-tunes it at.
RECIPE_RATE = 1.5e-3
HIGHER_RATE = 6e-3


def _saturation(subject: str) -> dict:
    """docs/records/int8_saturation.json: one subject's float32 and INT8 scores, measured on an
    x86 CPU without VNNI (the record says which)."""
    found = record("int8_saturation")
    if not found["saturating_cpu"]:
        raise AssertionError("int8_saturation.json was not measured on a saturating CPU")
    return found["subjects"][subject]


def _higher_rate_rows(plain: bool = True) -> list[dict]:
    """docs/records/budget.json's 860-step rows of the 3x choices at :data:`HIGHER_RATE`: those
    of the recipe itself (``plain``: no distillation, the plain HOSVD start) or every one. Rows
    of ranks given on the command line (``given_ranks``) are another choice and left out, and so
    are those of the balanced Tucker T-Net (:func:`_balanced_rate_rows`)."""
    return [
        r
        for r in record("budget")["rows"]
        if r["steps"] == 860
        and r.get("lr") == HIGHER_RATE
        and "given_ranks" not in r
        and not r.get("balanced")
        and not (plain and ("distill_weight" in r or "start" in r))
    ]


def _balanced_rate_rows() -> tuple[dict[float, dict], dict[float, dict], dict]:
    """docs/records/budget.json, seed 0, float32: the balanced 3x Tucker T-Net (the ranks of
    ``--ratio 3 --data``) and the original by learning rate (:data:`RECIPE_RATE` where the row
    has none), and the balanced hand choice 2,2,3,2,32,32,2,2 at the recipe's rate."""
    rows = [
        r
        for r in record("budget")["rows"]
        if r["steps"] == 860
        and r["seed"] == 0
        and r.get("precision") == "fp32"
        and "distill_weight" not in r
        and "start" not in r
    ]
    given = [r for r in rows if "given_ranks" in r]
    rows = [r for r in rows if "given_ranks" not in r]
    tnet = {
        r.get("lr") or RECIPE_RATE: r for r in rows if r["model"] == "tucker" and r.get("balanced")
    }
    original = {r.get("lr") or RECIPE_RATE: r for r in rows if r["model"] == "original"}
    (hand,) = [
        r
        for r in given
        if r["given_ranks"] == "2,2,3,2,32,32,2,2" and r.get("balanced") and not r.get("lr")
    ]
    return tnet, original, hand


def _balanced_rate_figures() -> tuple[str, ...]:
    """The balanced 3x T-Net at the recipe's rate and at twice and four times it, against the
    original fine-tuned alike (seed 0, float32, test split)."""
    tnet, original, _ = _balanced_rate_rows()
    rates = (RECIPE_RATE, 3e-3, HIGHER_RATE)
    test = {lr: (tnet[lr]["test_pckh"], original[lr]["test_pckh"]) for lr in rates}
    return (
        *(f1(test[lr][0]) for lr in rates),
        *(f1(test[lr][1]) for lr in rates),
        *(f1(test[lr][1] - test[lr][0]) for lr in rates),
    )


def _balanced_ranks_figures() -> tuple[str, ...]:
    """docs/records/budget.json: the balanced 3x T-Net of ``--ratio 3 --data`` against the hand
    choice 2,2,3,2,32,32,2,2 at the recipe's rate (seed 0, float32), and the original alike."""
    tnet, original, hand = _balanced_rate_rows()
    auto = tnet[RECIPE_RATE]
    if auto["ranks"] != [2, 2, 3, 2, 31, 32, 2, 2]:
        raise AssertionError(f"the data's 3x choice changed: {auto['ranks']}")
    return (
        f1(auto["test_pckh"]),
        f1(hand["test_pckh"]),
        f1(auto["val_pckh"]),
        f1(hand["val_pckh"]),
        f1(original[RECIPE_RATE]["test_pckh"]),
    )


def _distill_figures() -> tuple[str, ...]:
    """docs/records/budget.json: what mixing distillation (weight 0.5) into the recipe at
    :data:`HIGHER_RATE` costs the 3x T-Net and the original, seed 0, on the test split."""
    rows = _higher_rate_rows(plain=False)

    def test(model: str, distilled: bool) -> float:
        (found,) = [
            r["test_pckh"]
            for r in rows
            if r["model"] == model
            and r["seed"] == 0
            and "start" not in r
            and (r.get("distill_weight") == 0.5) == distilled
        ]
        return found

    return (
        f1(test("tucker", False) - test("tucker", True)),
        f1(test("original", False) - test("original", True)),
    )


def _paired_interval(gaps: list[float]) -> tuple[float, float, float]:
    """The mean of per-seed differences and its 95% t-interval (low, high) over the seeds."""
    from scipy import stats

    mean = sum(gaps) / len(gaps)
    half = stats.t.ppf(0.975, len(gaps) - 1) * stats.sem(gaps)
    return mean, mean - half, mean + half


def _seed_gap() -> tuple[dict[int, float], dict[int, float], float, float, float]:
    """docs/records/budget.json: the plain 3x T-Net and original at :data:`HIGHER_RATE` by seed,
    and the mean gap (original minus T-Net) over the seeds both hold with its 95% t-interval,
    paired by seed (a seed draws the same batches for both networks)."""
    rows = _higher_rate_rows()
    tnet = {r["seed"]: r["test_pckh"] for r in rows if r["model"] == "tucker"}
    original = {r["seed"]: r["test_pckh"] for r in rows if r["model"] == "original"}
    seeds = sorted(tnet.keys() & original.keys())
    if len(seeds) < 3:
        raise AssertionError(f"three paired seeds at {HIGHER_RATE} expected, found {seeds}")
    return tnet, original, *_paired_interval([original[s] - tnet[s] for s in seeds])


#: The Tucker ranks ``--ratio 2 --data synthetic`` picks on the bundled model.
TUCKER_2X = "2,4,3,2,29,32,2,2"


def _two_x_seeds() -> tuple[str, ...]:
    """docs/records/budget.json, bf16 at the recipe's rate: the balanced 2x Tucker T-Net of
    ``--ratio 2 --data`` and the original by seed; the mean gap (original minus T-Net) on the
    test split with its 95% t-interval paired by seed, the seeds, and the mean gap on
    validation."""
    rows = [
        r
        for r in record("budget")["rows"]
        if r["steps"] == 860
        and r.get("precision") == "bf16"
        and not r.get("lr")
        and not any(k in r for k in ("warmup", "distill_weight", "start"))
    ]
    tnet = {
        r["seed"]: r
        for r in rows
        if r["model"] == "tucker" and r.get("given_ranks") == TUCKER_2X and r.get("balanced")
    }
    original = {r["seed"]: r for r in rows if r["model"] == "original"}
    seeds = sorted(tnet.keys() & original.keys())
    if len(seeds) < 3:
        raise AssertionError(f"three paired 2x seeds expected, found {seeds}")

    def gaps(split: str) -> list[float]:
        return [original[s][f"{split}_pckh"] - tnet[s][f"{split}_pckh"] for s in seeds]

    mean, low, high = _paired_interval(gaps("test"))
    return (
        n(len(seeds)),
        f"{mean:.2f}",
        f"{low:+.2f}",
        f"{high:+.2f}",
        f"{sum(gaps('val')) / len(seeds):.2f}",
    )


def _rate_figures() -> tuple[str, ...]:
    """docs/records/budget.json: the 3x T-Net and the original at :data:`HIGHER_RATE` (means over
    the seeds) against the recipe's rate (the means over the seeds of the comparison at the
    5-minute recipe), and the gap between them paired by seed."""
    tnet, original, mean, low, high = _seed_gap()
    tnet_mean = sum(tnet.values()) / len(tnet)
    original_mean = sum(original.values()) / len(original)
    # The runs at the higher rate started from the orthonormal form, as did the comparison's
    # Tucker rows before the T-Net was balanced (docs/records/balance.json).
    (balance,) = [r for r in record("balance")["rows"] if r["target"] == 3.0]
    recipe_tnet = balance["orthonormal"]["after"]["mean"]
    recipe_original = compare_row("uncompressed", None, "compare_recipe")["after"]["mean"]
    return (
        sci(HIGHER_RATE),
        f1(tnet_mean - recipe_tnet),
        f1(tnet_mean),
        n(len(tnet)),
        f1(original_mean - recipe_original),
        f1(original_mean),
        n(len(original)),
        f1(mean),
        f"{low:+.1f}",
        f"{high:+.1f}",
    )


def _fit_start_figures() -> tuple[str, ...]:
    """docs/records/budget.json: the 3x T-Net from the data-aware fit (``hosvd+fit``) at
    :data:`HIGHER_RATE` against the plain HOSVD start, seed 0, on the test split."""
    rows = [r for r in _higher_rate_rows(plain=False) if r["model"] == "tucker" and r["seed"] == 0]
    (fit,) = [r["test_pckh"] for r in rows if r.get("start") == "hosvd+fit"]
    (plain,) = [r["test_pckh"] for r in rows if "start" not in r and "distill_weight" not in r]
    return f1(plain - fit), f1(fit)


def _balance_figures(target: float = 3.0) -> tuple[str, ...]:
    """docs/records/balance.json: the comparison's Tucker T-Net at ``target`` fine-tuned from the
    balanced form against the orthonormal one (means over seeds, test split), the paired
    interval, and the balanced T-Net's gap to the original fine-tuned alike."""
    (row,) = [r for r in record("balance")["rows"] if r["target"] == target]
    balanced, orthonormal = row["balanced"]["after"], row["orthonormal"]["after"]
    d = row["difference"]
    return (
        f1(d["mean"]),
        f1(balanced["mean"]),
        f1(orthonormal["mean"]),
        str(len(balanced["seeds"])),
        f"{d['low']:+.1f}",
        f"{d['high']:+.1f}",
        f1(row["gap_balanced"]),
    )


def _rate_methods_figures() -> tuple[str, ...]:
    """docs/records/budget.json: the 3x MPS and CP T-Nets at :data:`HIGHER_RATE` (seed 0), the
    MPS one against seed 0 of the comparison at the 5-minute recipe."""
    rows = {r["model"]: r for r in _higher_rate_rows() if r["seed"] == 0}
    recipe_mps = compare_row("mps", 3.0, "compare_recipe")["after"]["seeds"][0]
    return (f1(rows["mps"]["test_pckh"]), f1(recipe_mps), f1(rows["cp"]["test_pckh"]))


def _group_ranks_figures() -> tuple[str, ...]:
    """docs/records/group_ranks.json: the Tucker T-Net on data and on the bound, at 3x and 4x."""
    found = record("group_ranks")
    rows = {(r["ratio"], r["method"], r["criterion"]): r for r in found["rows"]}
    data3, bound3 = rows[3.0, "tucker", "data"], rows[3.0, "tucker", "bound"]
    data4, bound4 = rows[4.0, "tucker", "data"], rows[4.0, "tucker", "bound"]
    ends = [r["finetuned_mean"] for r in found["rows"]] + [found["network"]["finetuned_mean"]]
    return (
        f1(data3["converted"]),
        f1(bound3["converted"]),
        f1(data3["recalibrated"]),
        f1(bound3["recalibrated"]),
        f1(data4["recalibrated"]),
        f1(bound4["recalibrated"]),
        str(bound4["ranks"]["stage3"][3]),
        str(found["settings"]["steps"]),
        f1(max(ends) - min(ends)),
        f1(found["network"]["finetuned_mean"]),
    )


DECLARATIONS = [
    Settings(
        "## Results",
        'Fine-tuned Tucker T-Nets outside "The comparison at the 5-minute recipe", the table of '
        '"Fine-tuning after compression" and "Ranks chosen on data" were measured',
    ),
    # --- Set-up (the demo) ----------------------------------------------------------------------
    Figure(
        SETUP,
        "the 5-minute fine-tuning recipe ends within {} points of the original fine-tuned alike",
        lambda: f1(gap("tnet-3x")),
    ),
    Figure(
        SETUP,
        "the 3x Tucker T-Net runs {}x faster in float32 and {}x in INT8.",
        lambda: (
            f2(deployed("tucker 3x", "fp32", "factorized")["speedup"]),
            f2(deployed("tucker 3x", "int8", "factorized")["speedup"]),
        ),
    ),
    # --- MPII ------------------------------------------------------------------------------------
    Figure(
        MPII,
        "On the {} people of `detections_our_format.mat`, with predictions made of the ground "
        "truth plus noise, tcompress and that script print the same groups and Mean to the two "
        "decimals the script prints",
        same_to_two_decimals,
    ),
    Figure(
        MPII,
        "on the {} people of `detections_our_format.mat` with both head joints, 0.6 x sqrt(2) x "
        "the segment is {}x the official head size (for almost all of them: the quartiles are {} "
        "too), so predictions that score {} by MPII's rules (ground truth plus Gaussian noise of "
        "{} head sizes) score {} with it",
        lambda: (
            n(record("head_size_rules")["people"]),
            f3(record("head_size_rules")["estimate_over_official"]["median"]),
            head_size_quartiles(),
            f1(record("head_size_rules")["pckh_official_head_sizes"]),
            f2(record("head_size_rules")["noise_head_sizes"]),
            f1(record("head_size_rules")["pckh_estimated_head_sizes"]),
        ),
    ),
    # --- The method ----------------------------------------------------------------------------
    Figure(
        METHOD,
        "fine-tuned alike for {} steps, a ring with bond 2 ends at {}% PCKh against {}% for MPS",
        lambda: (
            str(record("tensor_ring")["settings"]["steps"]),
            _tensor_ring_after("tr ring bond 2"),
            _tensor_ring_after("mps --ratio 3"),
        ),
    ),
    # --- Command line --------------------------------------------------------------------------
    Figure(
        COMMANDS,
        "reach {}x/{}x/{}x with Tucker and {}x/{}x/{}x with MPS",
        lambda: (*_ratio_reached("tucker"), *_ratio_reached("mps")),
    ),
    # --- Fine-tuning, evaluation and data ----------------------------------------------------
    Figure(
        TRAINING,
        "five uncorrected steps at a constant {} (batch {}) take the bundled model from {}% to {}% "
        "PCKh on {} held-out images, five corrected ones to {}%",
        lambda: (
            sci(record("bias_correction")["settings"]["lr"]),
            str(record("bias_correction")["settings"]["batch_size"]),
            f1(record("bias_correction")["before"]),
            _bias("plain"),
            str(record("bias_correction")["settings"]["val_samples"]),
            _bias("bias-corrected"),
        ),
    ),
    Figure(
        TRAINING,
        "On {} generated {} x {} photos with 8 people each ({} x {} crops, augmented, {} thread a "
        "process), the training data path delivers {} samples/s in one process and {} with 2 "
        "workers, {}x and {}x the previous reader's rate on the same photos as PNG files (it read "
        "no JPEG), and {}x and {}x its rate on PNG files written by its own writer, its fastest "
        "case; Pillow decodes a 256 x 256 PNG in {} ms where the previous decoder took {} ms",
        lambda: (
            str(record("data_path")["images"]),
            str(record("data_path")["image_shape"][1]),
            str(record("data_path")["image_shape"][0]),
            str(record("data_path")["image_size"]),
            str(record("data_path")["image_size"]),
            str(record("data_path")["threads"]),
            f0(record("data_path")["images_per_second"]["new"]["0"]),
            f0(record("data_path")["images_per_second"]["new"]["2"]),
            f0(record("data_path")["new_over_old"]["0"]),
            f0(record("data_path")["new_over_old"]["2"]),
            f1(record("data_path")["new_over_old_own_png"]["0"]),
            f1(record("data_path")["new_over_old_own_png"]["2"]),
            f1(record("data_path")["decode_256_png_ms"]["pillow"]),
            f1(record("data_path")["decode_256_png_ms"]["old_decoder"]),
        ),
    ),
    Figure(
        TRAINING,
        "(bf16, batch 16, {} workers) trains on {} samples/s read from the JPEG files at 256 x 256 "
        "against {} from `--cache`, {} against {} at 128 x 128",
        lambda: (
            str(record("data_training")["workers"]),
            f0(record("data_training")["runs"]["256"]["files_images_per_s"]),
            f0(record("data_training")["runs"]["256"]["memory_images_per_s"]),
            f0(record("data_training")["runs"]["128"]["files_images_per_s"]),
            f0(record("data_training")["runs"]["128"]["memory_images_per_s"]),
        ),
    ),
    # --- Deployment ------------------------------------------------------------------------------
    Settings(DEPLOYMENT, "validates at atol 1e-3 + rtol 1e-2 (half precision's 11 bits;"),
    Settings(DEPLOYMENT, "a convolution whose weight is off by 10% fails it,"),
    Settings(DEPLOYMENT, "scores the written file's PCKh@0.5 against the PyTorch model's"),
    Settings(DEPLOYMENT, "(defaults 0.25 for fp32, 0.5 for fp16, 1 for INT8)"),
    Settings(DEPLOYMENT, "per-channel 7-bit int8 weights, uint8 activations"),
    Settings(DEPLOYMENT, "7-bit weights run alike on every CPU, and `--full-range` keeps 8-bit"),
    Settings(DEPLOYMENT, "seeded unit-scale inputs at batch 1 and 3, output by output"),
    Settings(DEPLOYMENT, "(defaults 1e-6 and 1e-5: correct exports of every method, both forms,"),
    Settings(DEPLOYMENT, "the command exits with status 2 and no file is left"),
    Figure(
        DEPLOYMENT,
        "measured at no more than {} of that, a BatchNorm fold that leaves out eps at {}x it or "
        "more, so that bug fails",
        lambda: (f2(validation_margins()[0]), f1(validation_margins()[1])),
    ),
    Figure(
        WHICH_FILE,
        "Every method at 3x on the paper configuration ({} stacks, f = {}), in every form and "
        "precision, all timed in one run: ONNX Runtime {}, CPU provider, {} threads, batch 1, "
        "256x256, median of {} interleaved rounds on a 2-core x86 CPU with AVX-512 VNNI",
        lambda: (
            str(_paper_config()["n_stacks"]),
            str(_paper_config()["features"]),
            ".".join(record("deployment")["settings"]["onnxruntime"].split(".")[:2]),
            str(record("deployment")["settings"]["threads"]),
            str(record("deployment")["settings"]["repeats"]),
        ),
    ),
    Table(WHICH_FILE, deployment_table),
    Figure(
        WHICH_FILE,
        "The Tucker T-Net 4,4,3,2,64,64,3,3 runs {}x faster than the float32 original in a file "
        "{}x its size ({}x smaller), {}x faster than the original quantized alike ({}x).",
        lambda: (
            f2(deployed("tucker 3x", "int8", "factorized")["speedup"]),
            f3(size(deployed("tucker 3x", "int8", "factorized"))),
            f1(deployed("tucker 3x", "int8", "factorized")["size_ratio"]),
            f2(
                deployed("tucker 3x", "int8", "factorized")["speedup"]
                / deployed("original", "int8", "dense")["speedup"]
            ),
            f2(deployed("original", "int8", "dense")["speedup"]),
        ),
    ),
    Figure(
        WHICH_FILE,
        "on the bundled model the fine-tuned 3x Tucker T-Net's INT8 file scored {} PCKh point "
        "below its float32 file, the original's {} ({} held-out images,",
        lambda: (
            f2(int8_drop("tnet-3x-finetuned")),
            f2(int8_drop("original")),
            str(record("int8_choices")["settings"]["val_samples"]),
        ),
    ),
    Figure(
        WHICH_FILE,
        "Layer-wise CP runs alike in both forms at INT8 ({}x, {}x): take the factorized file, {}x "
        "smaller.",
        lambda: (
            f2(deployed("layerwise-cp 3x", "int8", "factorized")["speedup"]),
            f2(deployed("layerwise-cp 3x", "int8", "dense")["speedup"]),
            f1(
                size(deployed("layerwise-cp 3x", "int8", "dense"))
                / size(deployed("layerwise-cp 3x", "int8", "factorized"))
            ),
        ),
    ),
    Figure(
        WHICH_FILE,
        "At 3x their bond into the shared 3x3 kernel is {} channels, more multiply-adds than the "
        "original (MAC bound {}x), so the factorized file runs at {}x in float32; the dense form "
        "is the original's graph ({}x at INT8,",
        lambda: (
            str(record("deployment")["paper"]["models"]["mps 3x"]["ranks"][4]),
            f2(deployed("mps 3x", "fp32", "factorized")["mac_bound"]),
            f2(deployed("mps 3x", "fp32", "factorized")["speedup"]),
            f2(deployed("mps 3x", "int8", "dense")["speedup"]),
        ),
    ),
    Figure(
        WHICH_FILE,
        "{}x the original's size; {}x on this CPU, like its `.onnx`).",
        lambda: (
            f3(size(deployed("tucker 3x", "int8", "factorized", "ort"))),
            f2(deployed("tucker 3x", "int8", "factorized", "ort")["speedup"]),
        ),
    ),
    Figure(
        WHICH_FILE,
        "The float32 `.ort` ran at {}x where its `.onnx` ran at {}x",
        lambda: (
            f2(deployed("tucker 3x", "fp32", "factorized", "ort")["speedup"]),
            f2(deployed("tucker 3x", "fp32", "factorized")["speedup"]),
        ),
    ),
    Figure(
        WHICH_FILE,
        "(half the float32 file: {}x the original's for the Tucker T-Net). No GPU was available: "
        "the fp16 speeds measured here ({}x for that T-Net)",
        lambda: (
            f3(size(deployed("tucker 3x", "fp16", "factorized"))),
            f2(deployed("tucker 3x", "fp16", "factorized")["speedup"]),
        ),
    ),
    Figure(
        WHICH_FILE,
        "Its MAC bound ({}x) is what it can reach at most.",
        lambda: f2(deployed("tucker 3x", "fp16", "factorized")["mac_bound"]),
    ),
    Settings(WHICH_FILE, "(AVX2 only, or AVX-512 without VNNI)"),
    Settings(WHICH_FILE, "adds pairs of 8-bit products in 16 bits, which clamp. The 3x Tucker"),
    Settings(WHICH_FILE, "fine-tuned 300 steps (the quick start's command)"),
    Figure(
        WHICH_FILE,
        "scored {}% PCKh in INT8 on such a CPU against {}% in float32, and {}% with 7-bit weights "
        "({} held-out synthetic images,",
        lambda: (
            f1(_saturation("tnet-3x-finetuned")["8-bit"]["fused"]),
            f1(_saturation("tnet-3x-finetuned")["fp32"]),
            f1(_saturation("tnet-3x-finetuned")["7-bit"]["fused"]),
            str(record("int8_saturation")["settings"]["val_samples"]),
        ),
    ),
    Figure(
        WHICH_FILE,
        "its 8-bit file scored {}% and its 7-bit one {}%; the T-Net as converted lost {} and {} "
        "points that way",
        lambda: (
            f1(_saturation("tnet-3x-finetuned")["8-bit"]["unfused"]),
            f1(_saturation("tnet-3x-finetuned")["7-bit"]["unfused"]),
            f2(_saturation("tnet-3x-converted")["8-bit"]["unfused_drop"]),
            f2(_saturation("tnet-3x-converted")["7-bit"]["unfused_drop"]),
        ),
    ),
    Settings(WHICH_FILE, "warns on an 8-bit file there"),
    Settings(WHICH_FILE, "so 7-bit weights are the default; `--full-range` keeps 8-bit ones"),
    Settings(WHICH_FILE, "An 8-bit export on such a CPU"),
    Settings(WHICH_FILE, "8-bit weights, as the defaults then were"),
    Settings(WHICH_FILE, "INT8 weights are 7-bit by default"),
    Settings(WHICH_FILE, "fine-tuned with the 5-minute recipe"),
    Figure(
        WHICH_FILE,
        "the 3x Tucker T-Net ends {} points below the original fine-tuned alike ({} against {},",
        lambda: (
            f1(gap("tnet-3x")),
            f1(finetune_run("tnet-3x")["after"]),
            f1(finetune_run("dense")["after"]),
        ),
    ),
    Figure(
        WHICH_FILE,
        "the 3x MPS T-Net reached {} and the tensor ring {} after {} steps",
        lambda: (
            _tensor_ring_after("mps --ratio 3"),
            _tensor_ring_after("tr ring bond 2"),
            str(record("tensor_ring")["settings"]["steps"]),
        ),
    ),
    # --- Results: the bundled model --------------------------------------------------------------
    Figure(
        BUNDLED,
        "hourglass-synthetic.pth`, {} MB): a stacked hourglass of {} stacks, depth {}, "
        "{}-convolution blocks and {} features ({} parameters, {} of them in W), trained from "
        "seed {}",
        lambda: (
            f1(_bundled()["file_bytes"] / 1e6),
            str(_bundled()["config"]["n_stacks"]),
            str(_bundled()["config"]["depth"]),
            str(_bundled()["config"]["block_depth"]),
            str(_bundled()["config"]["features"]),
            n(_bundled()["params"]),
            n(_bundled()["tensor_params"]),
            str(_training()["train"]["seed"]),
        ),
    ),
    Figure(
        BUNDLED,
        "data at {} x {} inputs and {} x {} heatmaps, where the PCKh@0.5 radius is about {} "
        "heatmap pixels (median head size {} px;",
        lambda: (
            str(_training()["image_size"]),
            str(_training()["image_size"]),
            str(_training()["heatmap_size"]),
            str(_training()["heatmap_size"]),
            f0(0.5 * _bundled()["val_head_size_median"]),
            f1(_bundled()["val_head_size_median"]),
        ),
    ),
    Figure(
        BUNDLED,
        "{} steps of {} fresh samples (RMSprop, learning rate {} divided by {} at steps {} and {}) "
        "took {} minutes on 2 CPU cores;",
        lambda: (
            n(_training()["train"]["steps"]),
            str(_training()["train"]["batch_size"]),
            sci(_training()["train"]["lr"]),
            f0(1 / _training()["train"]["gamma"]),
            *(n(m) for m in _training()["train"]["milestones"]),
            f1(_training()["result"]["seconds"] / 60),
        ),
    ),
    Figure(
        BUNDLED,
        "PCKh@0.5 on {} held-out synthetic images as it trained:",
        lambda: str(_training()["data"]["val_samples"]),
    ),
    Table(BUNDLED, bundled_training_table),
    Figure(
        BUNDLED,
        "The last {} steps add {} points: the accuracy has levelled off, well below 100%",
        lambda: (
            n(_training()["train"]["steps"] - 2800),
            f1(bundled_evaluation(_training()["train"]["steps"]) - bundled_evaluation(2800)),
        ),
    ),
    # --- Results: fine-tuning after compression ------------------------------------------------
    Figure(
        FINETUNE,
        "fine-tuned by `tcompress finetune` for {} steps of {} images (RMSprop with bias "
        "correction, the learning rate falling from {} to zero along a cosine,",
        lambda: (
            str(record("finetune")["steps"]),
            str(record("finetune")["batch_size"]),
            sci(record("finetune")["lr"]),
        ),
    ),
    Figure(
        FINETUNE,
        "on {} synthetic training samples rendered once",
        lambda: n(record("finetune")["train_samples"]),
    ),
    Settings(
        FINETUNE,
        "PCKh@0.5 on 1,000 images of the synthetic test split; minutes are the whole `tcompress "
        "finetune` command on 2 CPU cores",
    ),
    Table(FINETUNE, finetune_table),
    Figure(
        FINETUNE,
        "From the balanced form that `convert` now gives a Tucker T-Net, the recipe takes the 3x "
        "T-Net of the comparison below {} points higher than from the HOSVD's orthonormal form "
        "({} against {} on the test split, the mean of {} seeds; paired 95% interval {} to {}), "
        "{} points below the original fine-tuned alike",
        _balance_figures,
    ),
    Settings(
        FINETUNE,
        "The table above is of the balanced form; the bullets below on the learning rate at this "
        "budget, the data-aware start and distillation with labels were measured from the "
        "orthonormal form, before it was balanced (`convert --orthonormal` makes it)",
    ),
    Figure(
        FINETUNE,
        "Balanced, the recipe's rate is the right one: the 3x T-Net ends at {} on the test split "
        "at 1.5e-3, {} at 3e-3 and {} at 6e-3 (seed 0, float32), the original fine-tuned alike at "
        "{}, {} and {}, so the gap is {}, {} and {} points",
        _balanced_rate_figures,
    ),
    Settings(
        FINETUNE,
        "the steps a higher rate gave the orthonormal form, and 6e-3 now overshoots. Keep "
        "`--lr 1.5e-3` for a Tucker T-Net",
    ),
    Figure(
        FINETUNE,
        "on 2 CPU cores the 2x T-Net ends {} points and the 3x T-Net {} points below the original "
        "fine-tuned alike. The original itself gains {} points from the same {} steps:",
        lambda: (
            f1(gap("tnet-2x")),
            f1(gap("tnet-3x")),
            f1(finetune_run("dense")["after"] - finetune_run("dense")["before"]),
            str(record("finetune")["steps"]),
        ),
    ),
    Figure(
        FINETUNE,
        "The recipe's learning rate is too low at this budget: at {} the 3x T-Net ends {} points "
        "higher on the test split ({}, the mean of {} seeds) and the original {} higher ({}, {} "
        "seeds); fine-tuned alike at that rate the 3x gap is {} points on the mean, with a 95% "
        "interval over the seeds (paired by seed) of {} to {}",
        _rate_figures,
    ),
    Figure(
        FINETUNE,
        "not an MPS one, which ended at {}% at that rate ({} at the recipe's), nor a CP one, which "
        "gained nothing ({}).",
        _rate_methods_figures,
    ),
    Figure(
        FINETUNE,
        "and fine-tuned at that rate, the 3x T-Net ends {} points below the plain HOSVD start on "
        "the test split ({}, seed 0",
        _fit_start_figures,
    ),
    Figure(
        FINETUNE,
        "mixed half and half into the recipe at that rate (what `--distill-from` does on labelled "
        "data by default), it cost the 3x T-Net {} points and the original {} on the test split",
        _distill_figures,
    ),
    Figure(
        FINETUNE,
        "on a folder of 2,000 unlabeled PNG images and no labels at all, recovers {} of the {} "
        "points conversion cost at 3x ({}%); it runs {} steps",
        lambda: (
            f1(
                finetune_run("tnet-3x-distill")["after"] - finetune_run("tnet-3x-distill")["before"]
            ),
            f1(finetune_run("dense")["before"] - finetune_run("tnet-3x-distill")["before"]),
            f0(
                100
                * (
                    finetune_run("tnet-3x-distill")["after"]
                    - finetune_run("tnet-3x-distill")["before"]
                )
                / (finetune_run("dense")["before"] - finetune_run("tnet-3x-distill")["before"])
            ),
            str(record("finetune")["distill_steps"]),
        ),
    ),
    # --- Results: the comparison at the 5-minute recipe -----------------------------------------
    Settings(RECIPE_COMPARE, "### The comparison at the 5-minute recipe"),
    Settings(RECIPE_COMPARE, "Here every method gets the 5-minute recipe"),
    Settings(RECIPE_COMPARE, "each a 95% interval over the same"),
    Figure(
        RECIPE_COMPARE,
        "The comparison above gives every method {} steps",
        lambda: str(_compare()["steps"]),
    ),
    Settings(
        RECIPE_COMPARE,
        "(860 steps, cosine from 1.5e-3, bf16, the first 3,000 training samples cached, BatchNorm "
        "re-estimated on 512 images)",
    ),
    Figure(
        RECIPE_COMPARE,
        "scored on {} images of the test split, from seeds {}",
        lambda: (
            n(record("compare_recipe")["settings"]["val_samples"]),
            _and(record("compare_recipe")["settings"]["seeds"]),
        ),
    ),
    Table(RECIPE_COMPARE, recipe_table),
    Table(RECIPE_COMPARE, recipe_differences),
    Settings(
        RECIPE_COMPARE,
        "bench_compare_recipe.py --ratio 3 --methods layerwise-cp,layerwise-tucker,tai",
    ),
    Settings(RECIPE_COMPARE, "bench_compare_recipe.py --ratio 3 --methods tucker --baseline"),
    Settings(
        RECIPE_COMPARE, "bench_compare_recipe.py --ratio 3 --methods tucker --seeds 2 --baseline"
    ),
    Settings(RECIPE_COMPARE, "bench_compare_recipe.py --ratio 2 --methods cp --seeds 1"),
    Figure(
        RECIPE_COMPARE,
        "layer-wise method at 2x**: by {} points over layer-wise CP ({} to {}), {} over layer-wise "
        "Tucker ({} to {}) and {} over Tai ({} to {}). The CP T-Net is level with all three, and "
        "the Tucker T-Net, the paper's own, ends {} to {} points ahead of them",
        lambda: (
            tuple(value for other in LAYERWISE for value in _spread("mps", other, 2.0))
            + (
                f1(min(recipe_difference("tucker", m, 2.0) for m in LAYERWISE)),
                f1(max(recipe_difference("tucker", m, 2.0) for m in LAYERWISE)),
            )
        ),
    ),
    Figure(
        RECIPE_COMPARE,
        "At 3x the Tucker T-Net (from the balanced form that `convert` now gives it) is the "
        "shared tensor that does best**: {} points over layer-wise Tucker ({} to {}) and {} over "
        "Tai ({} to {}), both intervals above zero, and {} over layer-wise CP ({} to {}). The CP "
        "and MPS T-Nets beat layer-wise Tucker ({} and {} points, both intervals above zero) and "
        "end level with layer-wise CP and Tai.",
        lambda: (
            *_spread("tucker", "layerwise-tucker", 3.0),
            *_spread("tucker", "tai", 3.0),
            *_spread("tucker", "layerwise-cp", 3.0),
            f1(recipe_difference("cp", "layerwise-tucker", 3.0)),
            f1(recipe_difference("mps", "layerwise-tucker", 3.0)),
        ),
    ),
    Figure(
        RECIPE_COMPARE,
        "At 5x (layer-wise Tucker and Tai from seed 0 only) layer-wise CP ends at {}% and the CP "
        "T-Net at {}% (a difference of {}, from {} to {}); the MPS T-Net ends at {}% and the "
        "Tucker T-Net at {}%, whose ranks chosen on the data, {}, give every kernel one fixed "
        "spatial profile.",
        lambda: (
            f1(compare_row("layerwise-cp", 5.0, "compare_recipe")["after"]["mean"]),
            f1(compare_row("cp", 5.0, "compare_recipe")["after"]["mean"]),
            *_spread("cp", "layerwise-cp", 5.0),
            f1(compare_row("mps", 5.0, "compare_recipe")["after"]["mean"]),
            f1(compare_row("tucker", 5.0, "compare_recipe")["after"]["mean"]),
            ranks(compare_row("tucker", 5.0, "compare_recipe")["ranks"]),
        ),
    ),
    Settings(
        RECIPE_COMPARE,
        "holds at 2x for the MPS T-Net against every layer-wise method, and at 3x for the Tucker "
        "T-Net against layer-wise Tucker and Tai, with layer-wise CP behind it by an interval "
        "that reaches zero. At 5x no shared tensor beats the best layer-wise method, layer-wise "
        "CP (the CP T-Net ends level with it), though the CP T-Net beats layer-wise Tucker and "
        "Tai there.",
    ),
    Settings(RECIPE_COMPARE, "the recipe closes most of that difference up to 3x."),
    Settings(RECIPE_COMPARE, "beyond 2x it is the compression, not the method, that costs"),
    Figure(
        RECIPE_COMPARE,
        "at 2x the MPS T-Net ends {} points below it, the other methods {} to {}; at 3x every "
        "method ends {} to {} points below, at 5x {} to {}, each interval excluding zero",
        lambda: (
            f1(recipe_gaps(2.0)["mps"]),
            f1(min(g for m, g in recipe_gaps(2.0).items() if m not in ("mps", "uncompressed"))),
            f1(max(recipe_gaps(2.0).values())),
            f1(min(g for m, g in recipe_gaps(3.0).items() if m != "uncompressed")),
            f1(max(recipe_gaps(3.0).values())),
            f1(min(g for m, g in recipe_gaps(5.0).items() if m != "uncompressed")),
            f1(max(recipe_gaps(5.0).values())),
        ),
    ),
    Settings(RECIPE_COMPARE, "timed while other runs shared the 2 cores"),
    Settings(
        RECIPE_COMPARE, "at 2x and 3x every row has all three, at 5x the T-Nets, layer-wise CP and"
    ),
    Settings(DEPLOYMENT, '(below, "The comparison at the 5-minute recipe")'),
    # --- Results: one tensor against layer-wise decompositions -------------------------------
    Figure(
        COMPARE,
        "re-estimate BatchNorm on {} training images, evaluate, fine-tune {} steps of {} images "
        "(RMSprop with bias correction, learning rate {}, heatmap loss on every stack) from each "
        "of {} seeds, evaluate again. PCKh@0.5 on {} held-out synthetic images, the mean of the "
        "seeds with a 95% interval from {} bootstrap resamples",
        lambda: (
            str(_compare()["recalibrate"]),
            str(_compare()["steps"]),
            str(_compare()["batch_size"]),
            sci(_compare()["lr"]),
            str(len(_compare()["seeds"])),
            str(_compare()["val_samples"]),
            n(_compare()["bootstrap"]),
        ),
    ),
    Settings(COMPARE, "over the uncompressed export, batch 1, 256x256 (measured while other runs"),
    Figure(
        COMPARE,
        "shared the 2 cores, so read it as a rough guide). {} minutes on 2 CPU cores:",
        lambda: f0(record("compare")["seconds"] / 60),
    ),
    Table(COMPARE, compare_table),
    Figure(
        COMPARE,
        "({}% at 3.7x and {}% at 5x, against {}% and {}% for the Tucker T-Net)",
        lambda: (
            f1(compare_row("layerwise-cp", 3.7)["after"]["mean"]),
            f1(compare_row("layerwise-cp", 5.0)["after"]["mean"]),
            f1(compare_row("tucker", 3.7)["after"]["mean"]),
            f1(compare_row("tucker", 5.0)["after"]["mean"]),
        ),
    ),
    Settings(COMPARE, "At 1.5x and 2x every decomposition ends within a few points"),
    Figure(
        COMPARE,
        "same {} steps ({}%). At 3.7x both T-Nets (Tucker and MPS) are behind every layer-wise "
        "method; at 5x the Tucker T-Net is behind all but Tai",
        lambda: (
            str(_compare()["steps"]),
            f1(compare_row("uncompressed", None)["after"]["mean"]),
        ),
    ),
    Figure(
        COMPARE,
        "({}% against {}%, overlapping intervals)",
        lambda: (
            f1(compare_row("mps", 5.0)["after"]["mean"]),
            f1(compare_row("layerwise-tucker", 5.0)["after"]["mean"]),
        ),
    ),
    Figure(
        COMPARE,
        "The bundled model's {} block kernels",
        lambda: str(
            _bundled()["config"]["n_stacks"]
            * _bundled()["config"]["depth"]
            * 3
            * _bundled()["config"]["block_depth"]
        ),
    ),
    Figure(
        COMPARE,
        "for the same {} images learns nothing ({}-{}%)",
        lambda: (str(_compare()["steps"] * _compare()["batch_size"]), *_trimmed_range()),
    ),
    Figure(
        COMPARE,
        "loses {} points over the {} steps (batch {})",
        lambda: (
            f1(
                compare_row("uncompressed", None)["before"]["mean"]
                - compare_row("uncompressed", None)["after"]["mean"]
            ),
            str(_compare()["steps"]),
            str(_compare()["batch_size"]),
        ),
    ),
    # --- Results: choosing ranks ---------------------------------------------------------------
    Figure(
        RANKS,
        "PCKh@0.5 on {} held-out images before any fine-tuning (original: {}%)",
        lambda: (
            str(record("ranks")["settings"]["val_samples"]),
            f1(record("ranks")["original"]),
        ),
    ),
    Settings(RANKS, "the last row is the hand choice the 3x fine-tuning run and the demo use"),
    Table(RANKS, ranks_table),
    Figure(
        RANKS,
        "at 3x, 2,2,3,2,32,32,2,2 (depth rank 2, 2x2 kernels) rebuilds W worse (relative error {} "
        "against {}) yet converts higher ({}% against {}%)",
        lambda: (
            f2(ranks_row("given", given="2,2,3,2,32,32,2,2")["relative_error"]),
            f2(ranks_row("ratio", 3.0)["relative_error"]),
            f1(ranks_row("given", given="2,2,3,2,32,32,2,2")["pckh"]),
            f1(ranks_row("ratio", 3.0)["pckh"]),
        ),
    ),
    # --- Results: conversion ---------------------------------------------------------------------
    Figure(
        CONVERSION,
        "Paper configuration ({} stacks, depth {}, {} convs per block, {} features, {} joints): "
        "{} parameters, of which {} form W ({} block convolutions).",
        lambda: (
            str(_paper_config()["n_stacks"]),
            str(_paper_config()["depth"]),
            str(_paper_config()["block_depth"]),
            str(_paper_config()["features"]),
            str(_paper_config()["n_joints"]),
            n(record("models")["paper"]["params"]),
            n(record("models")["paper"]["tensor_params"]),
            str(record("models")["paper"]["block_convolutions"]),
        ),
    ),
    Table(CONVERSION, conversion_table),
    # --- Results: ranks chosen on data -------------------------------------------------------
    Settings(
        DATA_RANKS,
        "`tcompress convert CKPT --ratio 3 --data IMAGES` (Tucker) chooses the ranks on unlabeled "
        "images",
    ),
    Settings(DATA_RANKS, "BatchNorm re-estimated on 64 of the images"),
    Figure(
        DATA_RANKS,
        "The float32 runs of `docs/budget.md` (seed 0) agree: the `--ratio 3 --data synthetic` "
        "choice ends at {} on the test split and the hand choice at {} ({} against {} on "
        "validation), the original fine-tuned alike at {}.",
        _balanced_ranks_figures,
    ),
    Settings(DATA_RANKS, "where the original does on 64 others"),
    Settings(DATA_RANKS, "Candidate rank sets of the bundled model at about 3x"),
    Settings(DATA_RANKS, "scored on 1,000 images of the validation and of the test split"),
    Settings(DATA_RANKS, "fine-tuned with the 5-minute recipe above"),
    Table(DATA_RANKS, criteria_table),
    Settings(DATA_RANKS, "Every row was fine-tuned from the balanced form that `convert` gives"),
    Settings(
        DATA_RANKS,
        'rank sets that keep more of the kernels end lower (`docs/budget.md`, "Is the 2x gap the '
        'ranks?")',
    ),
    Figure(
        DATA_RANKS,
        "the agreement (no labels) and the converted PCKh each have a rank correlation of {} with "
        "the fine-tuned validation PCKh (Spearman's, over the five candidates), the error of W {} "
        "and the summed output costs {}.",
        _criteria_correlations,
    ),
    Figure(
        DATA_RANKS,
        "misplace stack rank 1, which converts to {}% and fine-tunes above the error bound's "
        "choice",
        _stack_rank_one,
    ),
    Figure(
        DATA_RANKS,
        "the fitted error correlates with the fine-tuned PCKh the wrong way round ({}: the higher "
        "the error, the higher the PCKh)",
        lambda: f1(_criteria()["spearman_with_val_pckh"]["refined_error"]),
    ),
    Figure(
        DATA_RANKS,
        "rate the error bound's choice above the hand choice, which fine-tunes {} points higher on "
        "the test split",
        lambda: f1(
            _criteria()["candidates"]["2,2,3,2,32,32,2,2"]["test_pckh"]
            - _criteria()["candidates"]["2,4,3,2,31,32,2,1"]["test_pckh"]
        ),
    ),
    Figure(
        DATA_RANKS,
        "`--ratio 3 --data synthetic` rates {} rank sets and picks {}, the hand choice with one "
        "input channel less (the hand choice itself is {}x, just short of the target): "
        "fine-tuned, {}% on the test split against {}% for the hand choice and {}% for the error "
        "bound's `--ratio 3`. The original fine-tuned alike ends at {}%: the 3x T-Net stays {} "
        "points below it",
        lambda: (
            str(len(_auto("3")["rank_search"]["quick"])),
            ranks(_auto("3")["ranks"]),
            f"{_criteria()['candidates']['2,2,3,2,32,32,2,2']['ratio']:.4f}",
            f1(_auto("3")["test_pckh"]),
            f1(_criteria()["candidates"]["2,2,3,2,32,32,2,2"]["test_pckh"]),
            f1(_criteria()["candidates"]["2,4,3,2,31,32,2,1"]["test_pckh"]),
            f1(_criteria()["original"]["test_pckh"]),
            f1(_criteria()["original"]["test_pckh"] - _auto("3")["test_pckh"]),
        ),
    ),
    Figure(
        DATA_RANKS,
        "At 2x, `--ratio 2 --data synthetic` picks {} (the error bound's choice too) and "
        "fine-tunes to {}% on the test split ({}% on validation), {} points below the original;",
        lambda: (
            ranks(_auto("2")["ranks"]),
            f1(_auto("2")["test_pckh"]),
            f1(_auto("2")["val_pckh"]),
            f1(_criteria()["original"]["test_pckh"] - _auto("2")["test_pckh"]),
        ),
    ),
    Figure(
        DATA_RANKS,
        "Over {} seeds of the same runs (`docs/budget.md`) the 2x gap is {} points on the test "
        "split (95% interval over the seeds, paired by seed, {} to {}) and {} on validation",
        _two_x_seeds,
    ),
    Figure(
        DATA_RANKS,
        "at 3x converts to {}% top-1 with ranks chosen on data against {}% on the error bound ({}% "
        "against {}% after BatchNorm re-estimation), and at 4x to {}% against {}% after "
        "re-estimation: there the bound gives the widest group's output channels rank {}. After {} "
        "steps of fine-tuning every T-Net, Tucker or MPS, either choice, ends within {} points of "
        "the others and of the dense network fine-tuned alike ({}%)",
        _group_ranks_figures,
    ),
    Settings(DATA_RANKS, "On a trained classifier of three widths (16, 32, 64;"),
    Settings(CONVERSION, "Both exit with status 1 when a speed-up misses its target."),
    Figure(
        CONVERSION,
        "On the paper configuration, {} threads, the medians of {} interleaved rounds on an idle "
        "machine ({}; load average {} before, {} after; record `docs/records/convert_speed.json`",
        lambda: (
            str(record("convert_speed")["settings"]["threads"]),
            str(record("convert_speed")["settings"]["repeats"]),
            _vector_units(record("convert_speed")["settings"]["isa"]),
            f2(record("convert_speed")["settings"]["load_average"]["before"]),
            f2(record("convert_speed")["settings"]["load_average"]["after"]),
        ),
    ),
    Figure(
        CONVERSION,
        "`tcompress.convert` is {}x faster than tensorly's Tucker decomposition alone at ranks {} "
        "and {}x faster than its tensor train at bonds {}; the whole `tcompress convert` command, "
        "Python start-up and file writing included, is {}x faster than tensorly's Tucker alone.",
        lambda: (
            f1(_convert_speed("tucker")["convert_speedup"]),
            ranks(_convert_speed("tucker")["ranks"]),
            f1(_convert_speed("mps")["convert_speedup"]),
            ranks(_convert_speed("mps")["ranks"]),
            f2(_convert_speed("tucker")["command_speedup"]),
        ),
    ),
    Settings(
        CONVERSION,
        "Other processes on the cores lower these ratios: compare them on an idle machine.",
    ),
    Settings(CONVERSION, "what a float32 Gram resolves (64 eps trace)"),
    Settings(CONVERSION, "the error from ||W||^2 - ||G||^2 in float64"),
]


def main() -> None:
    """Print the README's tables and docs/tensor_ring.md's, rendered from the records."""
    for name, render in (
        ("The bundled model", bundled_training_table),
        ("Fine-tuning after compression", finetune_table),
        ("One tensor against layer-wise decompositions", compare_table),
        ("Choosing ranks", ranks_table),
        ("Conversion", conversion_table),
        ("Which file to deploy", deployment_table),
        ("docs/tensor_ring.md", tensor_ring_table),
    ):
        print(f"{name}:\n" + "\n".join(render()) + "\n")


if __name__ == "__main__":
    main()
