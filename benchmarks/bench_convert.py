"""The whole conversion against tensorly's decomposition alone, same run, paper configuration.

Builds a paper-configuration hourglass (4 stacks, depth 4, 2 convs per block, 128 features; seeded
random weights and BatchNorm statistics), saves it as a checkpoint, and times:

* ``tensorly.decomposition.tucker(W, rank, n_iter_max=0, init="svd")`` and
  ``tensorly.decomposition.tensor_train(W, rank)`` on the stacked tensor W (the reference);
* ``tcompress.convert(model, ...)``: stacking, checks, decomposition and building the T-Net;
* the ``tcompress convert`` command in a fresh process: Python start-up, reading and checking the
  checkpoint, conversion and writing the T-Net file.

tensorly and ``tcompress.convert`` are timed in interleaved rounds (one call of each per round, so
that a busy period of the machine hits both), and each speed-up is the ratio of the median times
over the rounds (higher is faster); the best-of-rounds ratio is printed as well, with the relative
errors. Targets (exit status 1 if missed, on the medians): convert at least 30x (Tucker) and 10x
(MPS) faster than tensorly's decomposition, and the whole command faster than tensorly's Tucker
decomposition alone.

Other processes on the cores lower the ratios: run it on an idle machine. ``--record``
writes the figures with the load average before and after, the CPU and the library versions
(docs/records/convert_speed.json is the record the README quotes).

Usage::

    python benchmarks/bench_convert.py [--repeats 5] [--threads 2] [--json] [--record PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tensorly as tl
import torch
from tensorly.decomposition import tensor_train as tl_tensor_train
from tensorly.decomposition import tucker as tl_tucker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decompose import TT_RANKS, TUCKER_RANKS  # noqa: E402
from recipes import write_json  # noqa: E402

try:
    import tcompress
except ImportError:  # run from a checkout without installing: use the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import tcompress

from tcompress.models import StackedHourglass, random_hourglass  # noqa: E402
from tcompress.stacking import stack_hourglass  # noqa: E402


def paper_hourglass(seed: int = 0) -> StackedHourglass:
    """The paper configuration with seeded weights and BatchNorm statistics."""
    return random_hourglass(seed)


def interleaved(theirs, ours, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds of each call over ``rounds`` rounds of one call of each."""
    times_theirs, times_ours = [], []
    for _ in range(rounds):
        for fn, times in ((theirs, times_theirs), (ours, times_ours)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times_theirs, times_ours


#: The instruction sets a record names.
ISA = ("avx2", "avx512_f", "avx512_bf16", "amx_bf16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--record", help="also write the figures and the machine's state here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]

    model = paper_hourglass()
    W = stack_hourglass(model.state_dict(), model.config)
    tmp = tempfile.mkdtemp(prefix="tcompress-bench-")
    checkpoint = os.path.join(tmp, "hg.pth")
    torch.save(model.state_dict(), checkpoint)
    tcompress.convert(model, ranks=(2, 2, 2, 2, 8, 8, 2, 2))  # warm-up

    rows = []
    with tl.backend_context("pytorch"):
        for method, ranks, theirs in (
            ("tucker", TUCKER_RANKS, lambda: tl_tucker(W, list(TUCKER_RANKS), n_iter_max=0)),
            ("mps", TT_RANKS, lambda: tl_tensor_train(W, [1, *TT_RANKS, 1])),
        ):
            ours = lambda m=method, r=ranks: tcompress.convert(model, m, r)  # noqa: E731
            times_theirs, times_convert = interleaved(theirs, ours, max(1, args.repeats))
            t_theirs, t_convert = statistics.median(times_theirs), statistics.median(times_convert)
            out = os.path.join(tmp, f"{method}.pt")
            command = [
                sys.executable,
                "-m",
                "tcompress",
                "convert",
                checkpoint,
                "--method",
                method,
                "--ranks",
                ",".join(map(str, ranks)),
                "-o",
                out,
                "--force",
                "--json",
            ]
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            t_cli = time.perf_counter() - start
            summary = json.loads(result.stdout)
            rows.append(
                {
                    "method": method,
                    "ranks": list(ranks),
                    "convert_speedup": t_theirs / t_convert,
                    "convert_speedup_best": min(times_theirs) / min(times_convert),
                    "command_speedup": t_theirs / t_cli,
                    "relative_error": summary["relative_error"],
                    "compression_ratio": summary["compression_ratio"],
                    "seconds": {
                        "tensorly": times_theirs,
                        "convert": times_convert,
                        "command": t_cli,
                    },
                }
            )
    tucker_row, mps_row = rows
    missed = []
    if tucker_row["convert_speedup"] < 30:
        missed.append("Tucker convert < 30x tensorly")
    if mps_row["convert_speedup"] < 10:
        missed.append("MPS convert < 10x tensorly")
    if tucker_row["command_speedup"] <= 1:
        missed.append("the whole command is not faster than tensorly's Tucker alone")
    if args.record:
        capabilities = torch.cpu.get_capabilities()
        record = {
            "settings": {
                "repeats": args.repeats,
                "threads": args.threads,
                "torch": torch.__version__,
                "tensorly": tl.__version__,
                "cpu": capabilities.get("cpu_name") or platform.machine(),
                # The ratios depend on the vector units (tensorly's SVDs and the Grams' GEMMs
                # gain differently from AVX512): which of them the CPU has.
                "isa": [k for k in ISA if capabilities.get(k) is True],
                "cores": os.cpu_count(),
                "load_average": {"before": load_before, "after": os.getloadavg()[0]},
            },
            "rows": rows,
            "missed": missed,
        }
        write_json(args.record, record)
    if args.json:
        print(json.dumps({"rows": rows, "missed": missed}, indent=2))
    else:
        print(
            f"paper configuration, {args.threads} threads, {args.repeats} interleaved rounds; "
            "ratios = tensorly decomposition time / tcompress time (medians; best of rounds)"
        )
        print(
            f"{'method':8} {'convert()':>10} {'(best)':>8} {'command':>9} {'rel. error':>11} "
            f"{'ratio':>7}"
        )
        for row in rows:
            print(
                f"{row['method']:8} {row['convert_speedup']:9.1f}x "
                f"{row['convert_speedup_best']:7.1f}x {row['command_speedup']:8.2f}x"
                f" {row['relative_error']:11.6f} {row['compression_ratio']:6.2f}x"
            )
        for line in missed:
            print(f"MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
