"""Compression methods side by side on one model: the paper's comparison in miniature.

For every compression ratio and every method, :func:`compare` converts the model (the ranks chosen
by ``ratio``), re-estimates its BatchNorm statistics, evaluates it, fine-tunes it with the same
budget from several seeds and evaluates it again; the uncompressed model gets the same fine-tuning
and a network trimmed to the same size (fewer features) is trained from scratch with it. Every
model is evaluated on the same held-out images, so accuracies are compared *paired*: confidence
intervals come from one set of bootstrap resamples of those images, shared by every row, and the
seeds are averaged inside each resample. The per-image hits of every fine-tuned row are kept in
the report, so that :func:`paired_differences` gives the 95% interval of the *difference* between
two rows (a T-Net against each layer-wise method), also for reports merged from several runs.

The fine-tuning is any recipe :class:`~tcompress.train.TrainSettings` describes (schedule,
precision), on rendered-once training samples (``train_samples``, ``cache``) when asked: the
README's 5-minute recipe is ``steps=860, lr=1.5e-3, schedule="cosine", precision="bf16",
train_samples=3000, cache=True, recalibrate=512``. Choices are made on the validation split;
``split="test"`` evaluates on the test split, for a reported table.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from tcompress import methods as registry
from tcompress.errors import TcompressError

__all__ = [
    "BASELINES",
    "COMPARE_METHODS",
    "DEFAULT_METHODS",
    "ONNX_FORMS",
    "TRIMMED",
    "UNCOMPRESSED",
    "Accuracy",
    "CompareReport",
    "CompareRow",
    "CompareSettings",
    "bootstrap_accuracy",
    "compare",
    "compare_files",
    "paired_differences",
    "plot_comparison",
    "row_differences",
    "row_kind",
    "sample_hits",
    "trimmed_features",
]

log = logging.getLogger(__name__)

#: The baselines, rows that are not compression methods: the uncompressed model, fine-tuned
#: alike (the reference row), and a narrower hourglass trained from scratch with the same budget.
UNCOMPRESSED, TRIMMED = "uncompressed", "trimmed"
BASELINES = (UNCOMPRESSED, TRIMMED)
#: Methods ``compare`` takes: every registered compression method (T-Nets, then layer-wise)
#: and the trimmed baseline.
COMPARE_METHODS = (
    *registry.names(registry.TNET),
    *registry.names(registry.LAYERWISE),
    TRIMMED,
)
DEFAULT_METHODS = ("tucker", "mps", "layerwise-tucker", "layerwise-cp", "tai", TRIMMED)
#: The ONNX forms a row of each kind is exported in; the faster one is timed.
ONNX_FORMS = {
    TRIMMED: ("dense",),
    registry.TNET: ("factorized", "dense"),
    registry.LAYERWISE: ("factorized",),
}


def row_kind(method: str) -> str:
    """What a row of ``method`` is: a baseline (:data:`UNCOMPRESSED`, :data:`TRIMMED`) or the
    kind of a compression method (:data:`tcompress.methods.TNET` or ``LAYERWISE``)."""
    return method if method in BASELINES else registry.kind(method)


@dataclass(frozen=True)
class CompareSettings:
    """What :func:`compare` runs. Every method gets the same fine-tuning: ``steps`` RMSprop steps
    of ``batch_size`` images at learning rate ``lr`` (``schedule``: milestones at 60% and 85%, a
    cosine or a linear decay; ``precision``), after BatchNorm re-estimation on ``recalibrate``
    training images, once per seed. ``train_samples`` limits the training set to its first
    samples (the seed's draw), which ``cache`` renders once, in ``workers`` processes, and serves
    again mirrored. Accuracy is measured on ``val_samples`` images of ``split``."""

    ratios: tuple[float, ...] = (1.5, 2.0, 3.7, 5.0)
    methods: tuple[str, ...] = DEFAULT_METHODS
    steps: int = 100
    batch_size: int = 16
    lr: float = 5e-4
    seeds: tuple[int, ...] = (0, 1, 2)
    val_samples: int = 500
    recalibrate: int = 256
    refine_data: bool = False
    rank_data: bool = False  # T-Net ranks searched on the data (convert's ``data=``)
    per_layer: bool = False  # layer-wise Tucker and Tai: ranks of each layer's own (per_layer=)
    image_size: int = 256
    bootstrap: int = 1000
    onnx_repeats: int = 10
    baseline: bool = True  # also fine-tune the uncompressed model (the reference row)
    schedule: str = "step"
    precision: str = "fp32"
    train_samples: int | None = None
    cache: bool = False
    workers: int = 0
    split: str = "val"

    def __post_init__(self) -> None:
        from tcompress.vocabulary import PRECISIONS, SCHEDULES, SPLITS

        for name, allowed in (
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
            ("split", SPLITS[1:]),
        ):
            if getattr(self, name) not in allowed:
                raise TcompressError(
                    f"{name} is {getattr(self, name)!r}; expected one of {', '.join(allowed)}"
                )
        if self.train_samples is not None and (
            isinstance(self.train_samples, bool)
            or not isinstance(self.train_samples, int)
            or self.train_samples < 1
        ):
            raise TcompressError(
                f"train_samples is {self.train_samples!r}; expected a whole number >= 1 or None"
            )
        if not self.ratios or any(not (r > 1) or not math.isfinite(r) for r in self.ratios):
            raise TcompressError(f"ratios {list(self.ratios)!r}; expected numbers above 1")
        unknown = [m for m in self.methods if m not in COMPARE_METHODS]
        if not self.methods or unknown:
            raise TcompressError(
                f"methods {list(self.methods)!r}; expected some of {', '.join(COMPARE_METHODS)}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise TcompressError(f"seeds {list(self.seeds)!r}; expected distinct integers")
        for name in ("steps", "batch_size", "val_samples", "image_size", "bootstrap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TcompressError(f"{name} is {value!r}; expected a whole number >= 1")
        if self.image_size % 4:
            raise TcompressError(f"image_size is {self.image_size}; expected a multiple of 4")
        if not self.lr > 0:
            raise TcompressError(f"lr is {self.lr!r}; expected a positive number")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Accuracy:
    """PCKh@0.5 in percent: the value on the whole split (the mean over seeds after
    fine-tuning), its 95% bootstrap interval, and each seed's value."""

    mean: float
    low: float
    high: float
    seeds: list[float] = field(default_factory=list)


@dataclass
class CompareRow:
    method: str  # a compression method or a baseline (see ``kind``)
    target: float | None  # the ratio asked for; None for the uncompressed model
    ranks: list[int] | None
    params: int
    ratio: float
    before: Accuracy | None  # converted and BatchNorm re-estimated, before fine-tuning
    after: Accuracy | None
    onnx_speedup: float | None = None  # uncompressed ONNX latency / this model's
    onnx_form: str = "dense"  # the exported form timed (for T-Nets the faster of the two)
    convert_seconds: float = 0.0
    finetune_seconds: float = 0.0  # mean over seeds
    error: str | None = None  # why the row could not be measured (e.g. an unreachable ratio)
    hits: list[list[int]] | None = None  # per seed, per held-out image: joints hit, fine-tuned

    @property
    def kind(self) -> str:
        """:data:`UNCOMPRESSED`, :data:`TRIMMED`, or the method's kind (:func:`row_kind`)."""
        return row_kind(self.method)


@dataclass
class CompareReport:
    settings: CompareSettings
    checkpoint: str
    params: int
    rows: list[CompareRow]
    seconds: float
    counts: list[int] | None = None  # per held-out image: the joints scored

    @classmethod
    def from_dict(cls, data: dict) -> CompareReport:
        """Inverse of :meth:`to_dict` (for merging the reports of runs split over processes)."""
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()}
        rows = []
        for r in data["rows"]:
            r = dict(r)
            for key in ("before", "after"):
                r[key] = Accuracy(**r[key]) if r[key] is not None else None
            rows.append(CompareRow(**r))
        return cls(
            CompareSettings(**settings),
            data["checkpoint"],
            data["params"],
            rows,
            data["seconds"],
            data.get("counts"),
        )

    def to_dict(self) -> dict:
        return {
            "settings": self.settings.to_dict(),
            "checkpoint": self.checkpoint,
            "params": self.params,
            "rows": [asdict(r) for r in self.rows],
            "seconds": self.seconds,
            "counts": self.counts,
        }


def sample_hits(model: nn.Module, data: Dataset, batch_size: int = 16) -> tuple[torch.Tensor, ...]:
    """Per-sample (hits, visible counts) over the PCKh mean's joints.

    Shapes
    ------
    returns: (N,), (N,) for the N samples of ``data``, in order.
    """
    from tcompress.evaluation.run import pckh_of

    accumulator = pckh_of(model, data, batch_size, keep_samples=True)
    return accumulator.sample_hits, accumulator.sample_counts


def bootstrap_accuracy(
    hits: torch.Tensor, counts: torch.Tensor, resamples: torch.Tensor
) -> Accuracy:
    """PCKh and its 95% interval from per-seed, per-sample hits and shared image resamples.

    Shapes
    ------
    hits: (seeds, N); counts: (N,); resamples: (B, N) image indices.
    """
    hits, counts = hits.double(), counts.double()
    per_seed = 100 * hits.sum(1) / counts.sum()
    drawn = 100 * hits[:, resamples].mean(0).sum(-1) / counts[resamples].sum(-1)  # (B,)
    # A resample without a visible joint has no accuracy; it is left out.
    low, high = torch.nanquantile(drawn, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return Accuracy(float(per_seed.mean()), float(low), float(high), per_seed.tolist())


def shared_resamples(n: int, bootstrap: int) -> torch.Tensor:
    """The image resamples every row of a comparison is scored on: (bootstrap, n) indices drawn
    from a fixed seed, so separate runs on the same held-out images draw the same ones."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(n, (bootstrap, n), generator=generator)


@dataclass
class Difference:
    """PCKh of row ``a`` less that of row ``b`` (points) after fine-tuning, at one ratio: the
    mean over seeds of each, and the 95% interval over resamples of the held-out images, each
    resample scoring both rows on the same images (paired)."""

    ratio: float
    a: str
    b: str
    mean: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)


def row_differences(
    report: CompareReport, pairs: Sequence[tuple[CompareRow, CompareRow, float]]
) -> list[Difference]:
    """Row ``a`` less row ``b`` after fine-tuning for each ``(a, b, ratio)``, paired over the
    resamples of ``report``'s held-out images (both rows scored on those images, each with its
    per-image hits); the resamples are drawn once for every pair."""
    counts = torch.tensor(report.counts, dtype=torch.float64)
    resamples = shared_resamples(len(counts), report.settings.bootstrap)
    totals = counts[resamples].sum(-1)

    def drawn(row: CompareRow) -> tuple[float, torch.Tensor]:  # value, (B,) resampled values
        hits = torch.tensor(row.hits, dtype=torch.float64).mean(0)
        return 100 * float(hits.sum() / counts.sum()), 100 * hits[resamples].sum(-1) / totals

    def difference(a: CompareRow, b: CompareRow, ratio: float) -> Difference:
        (value_a, draws_a), (value_b, draws_b) = drawn(a), drawn(b)
        low, high = torch.nanquantile(
            draws_a - draws_b, torch.tensor([0.025, 0.975], dtype=torch.float64)
        )
        return Difference(ratio, a.method, b.method, value_a - value_b, float(low), float(high))

    return [difference(a, b, ratio) for a, b, ratio in pairs]


def paired_differences(report: CompareReport) -> list[Difference]:
    """Every T-Net row against every layer-wise row of the same target ratio, and every
    compressed row against the uncompressed model fine-tuned alike (``b = "uncompressed"``), from
    the per-image hits kept in ``report`` (rows without them are left out)."""
    if report.counts is None:
        return []
    measured = [r for r in report.rows if r.hits]
    reference = next((r for r in measured if r.kind == UNCOMPRESSED), None)
    pairs = []
    for ratio in report.settings.ratios:
        rows = [r for r in measured if r.target == ratio]
        tnets = [r for r in rows if r.kind == registry.TNET]
        layerwise = [r for r in rows if r.kind == registry.LAYERWISE]
        pairs.extend((a, b, ratio) for a in tnets for b in layerwise)
        if reference is not None:
            pairs.extend((r, reference, ratio) for r in rows)
    return row_differences(report, pairs)


def merge_reports(reports: Sequence[CompareReport]) -> CompareReport:
    """One report from runs split over processes or sessions: each by ratio, method or seed, on
    the same held-out images (the same split, size and bootstrap draws).

    Rows of one method at one target merge their seeds: the per-image hits are concatenated and
    the fine-tuned accuracy is recomputed from them (the mean over every seed, its interval over
    the shared resamples); the accuracy before fine-tuning, which does not depend on the seed, is
    the first run's. A seed a row already holds is not added again (the original fine-tuned by
    several parts, each for its own ratio). The settings list every ratio, method and seed of
    the parts.
    """
    if not reports:
        raise TcompressError("no reports to merge; expected at least one")
    first = reports[0]
    same = ("split", "val_samples", "image_size", "bootstrap", "steps", "batch_size", "lr")
    same += ("schedule", "precision", "train_samples", "recalibrate", "rank_data", "refine_data")
    same += ("per_layer",)
    for report in reports[1:]:
        for name in same:
            mine, theirs = getattr(first.settings, name), getattr(report.settings, name)
            if mine != theirs:
                raise TcompressError(
                    f"cannot merge runs with {name} {theirs!r} and {mine!r}; expected every run "
                    "on the same held-out images with the same recipe"
                )
        if report.counts != first.counts:
            raise TcompressError(
                "cannot merge runs scored on different held-out images (their visible-joint "
                "counts differ); expected the same split and number of images"
            )
    merged: dict[tuple, CompareRow] = {}
    seeds_of: dict[tuple, list[int]] = {}  # the seed of each of a merged row's hits
    for report in reports:
        for row in report.rows:
            key = (row.method, row.target)
            if key not in merged:
                merged[key] = replace(row, hits=list(row.hits) if row.hits else row.hits)
                seeds_of[key] = list(report.settings.seeds)
                continue
            have = merged[key]
            if have.ranks != row.ranks or have.error or row.error or not (have.hits and row.hits):
                raise TcompressError(
                    f"cannot merge two {row.method} rows at {row.target}x: ranks "
                    f"{have.ranks} and {row.ranks}; expected the same model fine-tuned from "
                    "other seeds, with per-image hits"
                )
            # A seed already merged (the original fine-tuned again by another part) counts once.
            new = [
                (seed, hits)
                for seed, hits in zip(report.settings.seeds, row.hits)
                if seed not in seeds_of[key]
            ]
            if not new:
                continue
            seconds = (have.finetune_seconds * len(have.hits) + row.finetune_seconds * len(new)) / (
                len(have.hits) + len(new)
            )
            have.hits = [*have.hits, *(hits for _, hits in new)]
            seeds_of[key] += [seed for seed, _ in new]
            have.finetune_seconds = seconds
    rows = list(merged.values())
    if first.counts is not None:
        counts = torch.tensor(first.counts)
        resamples = shared_resamples(len(counts), first.settings.bootstrap)
        for row in rows:
            if row.hits:
                row.after = bootstrap_accuracy(torch.tensor(row.hits), counts, resamples)
    seeds = sorted({seed for report in reports for seed in report.settings.seeds})
    methods = list(dict.fromkeys(m for report in reports for m in report.settings.methods))
    ratios = sorted({ratio for report in reports for ratio in report.settings.ratios})
    settings = replace(
        first.settings,
        seeds=tuple(seeds),
        methods=tuple(methods),
        ratios=tuple(ratios),
        baseline=any(report.settings.baseline for report in reports),
    )
    return CompareReport(
        settings,
        first.checkpoint,
        first.params,
        rows,
        sum(report.seconds for report in reports),
        first.counts,
    )


def trimmed_features(config, ratio: float) -> tuple[int, int]:
    """(features, parameters) of the hourglass like ``config`` but narrower whose parameter
    count is nearest ``params(config) / ratio`` on a log scale."""
    from tcompress.models import StackedHourglass

    def params(features: int) -> int:
        with torch.device("meta"):
            net = StackedHourglass(**{**config.to_dict(), "features": features})
        return sum(p.numel() for p in net.parameters())

    # The count is a quadratic in the width (kernels f x f, norms and biases f, heads f x J),
    # so three counts give every other; the one returned is counted again.
    f = config.features
    if f < 4:
        raise TcompressError(f"features is {f}; a trimmed network needs at least 4 to narrow")
    x = torch.tensor([1.0, f / 2, f], dtype=torch.float64)
    y = torch.tensor([params(int(v)) for v in (1, f // 2, f)], dtype=torch.float64)
    x[1] = f // 2
    coefficients = torch.linalg.solve(torch.stack((x**2, x, torch.ones(3, dtype=x.dtype)), 1), y)
    target = float(y[2]) / ratio
    widths = torch.arange(1, f, dtype=torch.float64)
    counts = coefficients[0] * widths**2 + coefficients[1] * widths + coefficients[2]
    best = int(widths[torch.argmin((counts.log() - math.log(target)).abs())])
    return best, params(best)


def compare_files(settings: CompareSettings) -> list[str]:
    """The names of the ONNX files :func:`compare` may write in its folder with ``settings``."""
    names = ["uncompressed.onnx"]
    for ratio in settings.ratios:
        for method in settings.methods:
            forms = ONNX_FORMS[row_kind(method)]
            names.extend(f"{method}-{ratio:g}x-{form}.onnx" for form in forms)
    return names


def compare(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike = "synthetic",
    settings: CompareSettings | None = None,
    *,
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CompareReport:
    """Convert, re-calibrate, fine-tune and evaluate ``checkpoint`` with every method at every
    ratio of ``settings`` (see the module docstring); the ONNX files go to ``out_dir``.

    A method that cannot reach a ratio (too coarse ranks) gets a row with ``error`` set instead
    of stopping the comparison. A file of :func:`compare_files` already in ``out_dir`` is refused
    before anything runs, and again as each file is written, unless ``force``.
    """
    from tcompress.checkpoint import check_new_files
    from tcompress.conversion import convert
    from tcompress.data import Materialized, SampleCache, make_dataset
    from tcompress.export.bench import bench_onnx
    from tcompress.export.onnx import export_onnx
    from tcompress.models import StackedHourglass
    from tcompress.serialize import load
    from tcompress.train import TrainSettings, fit, recalibrate_batchnorm

    settings = settings or CompareSettings()
    check_new_files([os.path.join(out_dir, n) for n in compare_files(settings)], force=force)
    say = progress or (lambda message: None)
    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    size, heatmap = settings.image_size, settings.image_size // 4
    original = load(checkpoint).to(device).eval()
    if not isinstance(original, StackedHourglass):
        raise TcompressError(
            f"checkpoint '{os.fspath(checkpoint)}' is a {type(original).__name__}; compare takes "
            "a dense tcompress StackedHourglass"
        )
    dense_params = sum(p.numel() for p in original.parameters())
    say(f"Rendering the held-out images ({settings.split} split)")
    val = Materialized(make_dataset(data, settings.split, size, heatmap, n=settings.val_samples))
    train = make_dataset(data, "train", size, heatmap)
    resamples = shared_resamples(len(val), settings.bootstrap)
    dense_onnx = os.path.join(out_dir, "uncompressed.onnx")
    export_onnx(original, dense_onnx, "dense", input_size=size, force=force)
    training_sets: dict[int, Dataset] = {}

    def training_set(seed: int) -> Dataset:
        """The fine-tuning data of ``seed``, rendered once per comparison when cached."""
        if settings.train_samples is None and not settings.cache:
            return train
        if seed not in training_sets:
            chosen = make_dataset(data, "train", size, heatmap, n=settings.train_samples, seed=seed)
            if settings.cache:
                say(f"Caching {len(chosen)} training samples, seed {seed}")
                chosen = SampleCache(chosen, workers=settings.workers, seed=seed)
            training_sets[seed] = chosen
        return training_sets[seed]

    def finetune(model: nn.Module, label: str) -> tuple[Accuracy, float, list[list[int]]]:
        hits, seconds = [], []
        for seed in settings.seeds:
            chosen = training_set(seed)
            say(f"{label}: fine-tuning, seed {seed}")
            net = copy.deepcopy(model)
            train_settings = TrainSettings(
                steps=settings.steps,
                batch_size=settings.batch_size,
                lr=settings.lr,
                seed=seed,
                schedule=settings.schedule,
                precision=settings.precision,
            )
            workers = 0 if settings.cache else settings.workers
            seconds.append(fit(net, chosen, train_settings, num_workers=workers).seconds)
            net.eval()
            hits.append(sample_hits(net, val)[0])
        stacked = torch.stack(hits)
        return (
            bootstrap_accuracy(stacked, counts, resamples),
            sum(seconds) / len(seconds),
            stacked.round().int().tolist(),
        )

    def accuracy(model: nn.Module) -> Accuracy:
        return bootstrap_accuracy(sample_hits(model, val)[0][None], counts, resamples)

    def recalibrated(model: nn.Module) -> nn.Module:
        images = Subset(train, range(min(settings.recalibrate, len(train))))
        if settings.recalibrate:
            recalibrate_batchnorm(model, DataLoader(images, batch_size=settings.batch_size))
        return model.eval()

    def speedup(model: nn.Module, name: str, forms: Sequence[str]) -> tuple[float | None, str]:
        """The ONNX speed-up of the fastest of ``forms`` over the uncompressed model. A form
        whose export fails (validation included) is not timed, and the row keeps its accuracy:
        the speed-up is None where every form failed, the form says why."""
        paths, exported, failures = [], [], []
        for form in forms:
            path = os.path.join(out_dir, f"{name}-{form}.onnx")
            try:
                export_onnx(model, path, form, input_size=size, force=force)
            except TcompressError as e:
                log.warning("%s, %s form: %s", name, form, e)
                failures.append(f"{form}: {e}")
                continue
            paths.append(path)
            exported.append(form)
        if not paths:
            return None, f"none ({'; '.join(failures)})"
        measured = bench_onnx([dense_onnx, *paths], input_size=size, repeats=settings.onnx_repeats)
        best = max(range(1, len(measured)), key=lambda i: measured[i].speedup)
        return measured[best].speedup, exported[best - 1]

    say("Evaluating the uncompressed model")
    reference_hits, counts = sample_hits(original, val)
    rows = []
    if settings.baseline:
        after, finetune_seconds, hits = finetune(original, "uncompressed")
        before = bootstrap_accuracy(reference_hits[None], counts, resamples)
        rows.append(
            CompareRow(
                UNCOMPRESSED,
                None,
                None,
                dense_params,
                1.0,
                before,
                after,
                onnx_speedup=1.0,
                finetune_seconds=finetune_seconds,
                hits=hits,
            )
        )
    for ratio in settings.ratios:
        for method in settings.methods:
            kind, label = row_kind(method), f"{method} at {ratio:g}x"
            say(f"{label}: converting")
            began = time.perf_counter()
            try:
                if kind == TRIMMED:
                    model, ranks, params = _trimmed(original, ratio, settings.seeds[0], device)
                else:
                    fit_data = settings.refine_data and kind == registry.TNET
                    rank_data = settings.rank_data and kind == registry.TNET
                    per_layer = settings.per_layer and registry.get(method).per_layer_bound
                    model = convert(
                        checkpoint,
                        method=method,
                        ratio=ratio,
                        refine_data=data if fit_data else None,
                        data=data if rank_data else None,
                        per_layer=per_layer,
                        device=device,
                    )
                    ranks, params = list(model.summary["ranks"]), model.summary["params_after"]
            except TcompressError as e:
                rows.append(CompareRow(method, ratio, None, 0, math.nan, None, None, error=str(e)))
                log.warning("%s: %s", label, e)
                continue
            converted = time.perf_counter() - began
            say(f"{label}: re-estimating BatchNorm and evaluating")
            # A trimmed network is new: its statistics are its own training's.
            model = model.eval() if kind == TRIMMED else recalibrated(model)
            before = accuracy(model)
            after, finetune_seconds, hits = finetune(model, label)
            say(f"{label}: ONNX latency")
            forms = ONNX_FORMS[kind]
            rows.append(
                CompareRow(
                    method,
                    ratio,
                    ranks,
                    params,
                    dense_params / params,
                    before,
                    after,
                    *speedup(model, f"{method}-{ratio:g}x", forms),
                    converted,
                    finetune_seconds,
                    hits=hits,
                )
            )
    return CompareReport(
        settings,
        os.fspath(checkpoint),
        dense_params,
        rows,
        time.perf_counter() - start,
        counts.round().int().tolist(),
    )


def _trimmed(original: nn.Module, ratio: float, seed: int, device) -> tuple[nn.Module, list, int]:
    """The trimmed baseline at ``ratio``: a new hourglass like ``original`` but narrower, its
    weights drawn from ``seed``; its "ranks" ([features]) and parameters."""
    from tcompress.models import StackedHourglass

    features, params = trimmed_features(original.config, ratio)
    torch.manual_seed(seed)
    config = {**original.config.to_dict(), "features": features}
    return StackedHourglass(**config).to(device), [features], params


def plot_comparison(report: CompareReport, path: str | os.PathLike, *, force: bool = True) -> None:
    """PCKh after fine-tuning against whole-network compression ratio, one line per method,
    with the 95% intervals as error bars and the fine-tuned uncompressed model as a dashed
    line, written to ``path`` as PNG (atomically; ``force=False`` refuses an existing file).

    Each point sits at the ratio its method reached; the x axis is labelled at the target
    ratios only (the reached ones differ by a few percent and would overlap), and the legend,
    outside the axes, lists every method's reached ratios. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(9, 4.5))
    reference = next((r for r in report.rows if r.kind == UNCOMPRESSED and r.after), None)
    if reference is not None:
        axes.axhline(
            reference.after.mean,
            color="black",
            linestyle="--",
            linewidth=1,
            label="uncompressed, fine-tuned alike",
        )
        axes.axhspan(reference.after.low, reference.after.high, color="black", alpha=0.08)
    reached = []
    for method in report.settings.methods:
        rows = sorted(
            (r for r in report.rows if r.method == method and r.after is not None),
            key=lambda r: r.ratio,
        )
        if not rows:
            continue
        reached += [r.ratio for r in rows]
        y = [r.after.mean for r in rows]
        spread = [
            [a - r.after.low for a, r in zip(y, rows)],
            [r.after.high - a for a, r in zip(y, rows)],
        ]
        ratios = ", ".join(f"{r.ratio:.2f}" for r in rows)
        axes.errorbar(
            [r.ratio for r in rows],
            y,
            yerr=spread,
            marker="o",
            markersize=4,
            capsize=3,
            label=f"{method} ({ratios}x)",
        )
    axes.set_xscale("log")
    targets = sorted(set(report.settings.ratios))
    axes.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(targets))
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    axes.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if reached:
        low, high = min([*reached, *targets]), max([*reached, *targets])
        axes.set_xlim(low / 1.08, high * 1.08)
    axes.set_xlabel("whole-network compression ratio (ticks: targets; points: the ratio reached)")
    axes.set_ylabel("PCKh@0.5 after fine-tuning (%)")
    s = report.settings
    pooled = sorted({len(r.hits) for r in report.rows if r.hits}) or [len(s.seeds)]
    seeds = f"{pooled[0]}" if len(pooled) == 1 else f"{pooled[0]}-{pooled[-1]}"
    axes.set_title(
        f"{s.steps} steps x {s.batch_size} images, {seeds} seeds, "
        f"{s.val_samples} held-out images; 95% intervals",
        fontsize=9,
    )
    axes.legend(
        title="method (ratios reached)",
        title_fontsize=8,
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        frameon=False,
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    from tcompress.checkpoint import atomic_write

    try:
        atomic_write(
            path,
            lambda tmp: figure.savefig(tmp, dpi=120, format="png", bbox_inches="tight"),
            force=force,
        )
    finally:
        plt.close(figure)
