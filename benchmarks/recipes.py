"""Settings the benchmarks share, so that every record that says "fine-tuned alike" is."""

#: The 5-minute fine-tuning recipe of docs/records/finetune.json (``tcompress finetune --lr 1.5e-3
#: --schedule cosine --precision bf16 --train-samples 3000 --cache --recalibrate 512``), as
#: keyword arguments of ``tcompress.finetune``; steps are given by each benchmark.
FIVE_MINUTE = dict(
    lr=1.5e-3,
    schedule="cosine",
    precision="bf16",
    train_samples=3000,
    cache=True,
    recalibrate=512,
    eval_samples=8,
    workers=2,
)

#: The same recipe as ``tcompress finetune`` options on the synthetic set, for the benchmarks
#: that run the command line a user runs.
FIVE_MINUTE_CLI = (
    "--data synthetic --recalibrate 512 --steps 860 --lr 1.5e-3 --precision bf16 "
    "--train-samples 3000 --cache --workers 2"
).split()


def timed_json(*args) -> tuple[dict, float]:
    """``python -m tcompress ARGS --json``: its JSON output and wall-clock seconds; exits with
    the command's error if it fails."""
    import json
    import subprocess
    import sys
    import time

    started = time.perf_counter()
    command = [sys.executable, "-m", "tcompress", *map(str, args), "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout), time.perf_counter() - started


def run_json(*args) -> dict:
    """``python -m tcompress ARGS --json``'s output (:func:`timed_json` without the time)."""
    return timed_json(*args)[0]


def write_text(path: str, text: str) -> None:
    """Write ``text`` and a final newline to ``path`` (the callback of an atomic write)."""
    with open(path, "w") as f:
        f.write(text + "\n")


def write_json(path: str, value) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically (a record as it grows)."""
    import json

    from tcompress.checkpoint import atomic_write

    text = json.dumps(value, indent=1)
    atomic_write(path, lambda tmp: write_text(tmp, text))
