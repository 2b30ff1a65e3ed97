"""Progress displays of the commands (stderr, rank 0): the library reports through callbacks,
these draw them."""

from __future__ import annotations

import click

#: The library's warnings in the command line's words (its flags for the library's parameters).
WARNINGS = {
    "bf16-emulated": "{device} has no native bfloat16 arithmetic here; --precision bf16 is likely "
    "slower than fp32",
}


class TrainingProgress:
    """The display of a training run (:func:`tcompress.finetune`'s ``progress`` and ``on_event``
    callbacks: :meth:`status` and :meth:`event`): a status line while the data is prepared, then
    a progress bar (loss, learning rate, speed); with ``show`` False, warnings only."""

    def __init__(self, show: bool) -> None:
        self.show, self.spinner, self.bar = show, None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop_status()
        if self.bar is not None:
            self.bar.stop()
        return False

    def status(self, message: str) -> None:
        if not self.show:
            return
        if self.spinner is None:
            from tcompress.cli.render import stderr

            self.spinner = stderr().status(message)
            self.spinner.start()
        else:
            self.spinner.update(message)

    def _stop_status(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None

    def event(self, event: dict) -> None:
        if event["kind"] == "warning":
            words = WARNINGS.get(event["name"])
            click.echo(f"warning: {words.format(**event) if words else event['message']}", err=True)
        if not self.show:
            return
        if event["kind"] == "start":
            self._stop_status()
            self._start_bar(event["steps"])
        elif event["kind"] == "step":
            now = self.clock()
            speed = "" if self.last is None else f" {1 / max(now - self.last, 1e-9):.2f} step/s"
            self.last = now
            info = f"loss {event['loss']:.3g} lr {event['lr']:.2g}{speed}"
            self.bar.update(self.task, completed=event["step"], info=info)
        elif event["kind"] == "eval":
            self.bar.console.print(f"step {event['step']}: PCKh@0.5 {event['pckh']:.1f}%")
            self.last = None

    def _start_bar(self, steps: int) -> None:
        import time

        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from tcompress.cli.render import stderr

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr(),
        )
        self.bar.start()
        self.task = self.bar.add_task("Training", total=steps, info="")
        self.clock, self.last = time.perf_counter, None


class CountProgress:
    """A transient bar of ``description``, started by the first ``update(done, total)`` (so that
    errors raised before it, such as a model that cannot be loaded, print alone); with ``show``
    False, nothing."""

    def __init__(self, description: str, show: bool = True) -> None:
        self.description, self.show, self.bar = description, show, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False

    def update(self, done: int, total: int | None) -> None:
        if not self.show:
            return
        if self.bar is None:
            from rich.progress import Progress

            from tcompress.cli.render import stderr

            self.bar = Progress(console=stderr(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=None)
        self.bar.update(self.task, completed=done, total=total)
