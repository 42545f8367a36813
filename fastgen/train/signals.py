"""Stopping a run from outside: SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler or a
container runtime sends before it kills a job).

The first signal asks the run to stop: it finishes the step it is in, every rank agreeing on
that step (fastgen.train.loop), writes a checkpoint and raises RunInterrupted. A second one
aborts at once, raising RunInterrupted where the program is; every file fastgen writes is
written atomically (fastgen.utils.atomic), so that leaves the files of the last write whole.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal (`signum`). After the first: at `step`, with its checkpoint
    `checkpoint` written (None when none could be: non-finite weights, or not the main
    process). After a second (`aborted`): at once, in whatever it was doing; `checkpoint` is
    then the run's last one, which is whole. The `fastgen` command exits with 128 + signum
    (130 for SIGINT, 143 for SIGTERM), the shells' convention."""

    def __init__(
        self, signum: int, step: int | None = None, checkpoint: Path | None = None, *,
        aborted: bool = False,
    ) -> None:  # fmt: skip
        self.signum, self.step, self.checkpoint, self.aborted = signum, step, checkpoint, aborted
        name = signal.Signals(signum).name
        what = "aborted by a second " + name if aborted else f"stopped by {name}"
        super().__init__(what + (f" after step {step}" if step is not None else ""))


class StopSignals:
    """A context in which SIGINT and SIGTERM ask for a stop (``requested``: the first
    signal's number, 0 while none came) instead of ending the program, and a second signal
    raises RunInterrupted(aborted=True). The handlers it replaced are restored on exit. A
    signal the process ignores stays ignored; outside the main thread, where Python cannot
    install handlers, it does nothing."""

    def __init__(self) -> None:
        self.requested = 0
        self.previous: dict[int, object] = {}  # None: a handler installed outside Python

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup, `cmd &` in scripts
                    self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self.previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise RunInterrupted(signum, aborted=True)
        self.requested = signum
