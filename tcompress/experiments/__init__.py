"""Experiments: protocols run over the library that write a record.

An experiment takes a model (and data), drives the library through a fixed protocol (convert,
re-estimate BatchNorm, fine-tune, evaluate, export, time) and returns a report dataclass with a
``to_dict`` that the command line writes as JSON (and, with matplotlib, a figure). The library's
core modules never import this package; the command line and the examples do.

- :mod:`.analysis` (``tcompress analyze``): the spectrum of every mode of W and a
  one-mode-at-a-time Tucker sweep;
- :mod:`.compare` (``tcompress compare``): every method at every ratio, fine-tuned alike, with
  paired-bootstrap intervals and ONNX speed-ups;
- :mod:`.demo` (``tcompress demo``): convert, fine-tune, evaluate and export the bundled
  pretrained hourglass.

Every public name of the three modules is re-exported here but the function
:func:`tcompress.experiments.compare.compare`, whose name is its module's: bound here it would
hide the module ``tcompress.experiments.compare``.
"""

from tcompress.experiments.analysis import (
    Analysis,
    SweepPoint,
    analyze,
    plot_analysis,
    sweep_ranks,
)
from tcompress.experiments.compare import (
    COMPARE_METHODS,
    DEFAULT_METHODS,
    Accuracy,
    CompareReport,
    CompareRow,
    CompareSettings,
    bootstrap_accuracy,
    plot_comparison,
    sample_hits,
    trimmed_features,
)
from tcompress.experiments.demo import (
    DEMO_LR,
    DEMO_RANKS,
    DEMO_SAMPLES,
    DEMO_STEPS,
    DemoReport,
    Stage,
    run_demo,
)

__all__ = [
    "COMPARE_METHODS",
    "DEFAULT_METHODS",
    "DEMO_LR",
    "DEMO_RANKS",
    "DEMO_SAMPLES",
    "DEMO_STEPS",
    "Accuracy",
    "Analysis",
    "CompareReport",
    "CompareRow",
    "CompareSettings",
    "DemoReport",
    "Stage",
    "SweepPoint",
    "analyze",
    "bootstrap_accuracy",
    "plot_analysis",
    "plot_comparison",
    "run_demo",
    "sample_hits",
    "sweep_ranks",
    "trimmed_features",
]
