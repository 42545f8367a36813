"""The progress bar of a training run."""

from __future__ import annotations

import sys
import time

# Without a terminal (a log file, CI, nohup) each refresh of the bar is a line of the log;
# there it writes at most every this many seconds (and once at the end).
LOG_REFRESH_S = 30.0


class Progress:
    """A tqdm bar (it/s from tqdm; images/s and the latest losses as its postfix).

    On a terminal it refreshes as tqdm does (every 0.1 s at most); when stderr is not a
    terminal, at most every LOG_REFRESH_S seconds, so a redirected run's log holds a few bar
    lines instead of one per step."""

    def __init__(
        self, start: int, total: int, images_per_step: int, enabled: bool, desc: str
    ) -> None:
        self.bar = None
        self.images_per_step = images_per_step
        self.start_time, self.start_step = time.perf_counter(), start
        if enabled:
            from tqdm.auto import tqdm

            interval = {}
            if not _is_terminal(sys.stderr):
                # maxinterval too: tqdm's monitor thread would refresh every 10 s otherwise.
                interval = {"mininterval": LOG_REFRESH_S, "maxinterval": LOG_REFRESH_S}
            self.bar = tqdm(
                total=total,
                initial=start,
                desc=desc,
                unit="it",
                dynamic_ncols=True,
                leave=True,
                file=sys.stderr,
                **interval,
            )

    def images_per_second(self, step: int) -> float:
        elapsed = time.perf_counter() - self.start_time
        return (step - self.start_step) * self.images_per_step / elapsed if elapsed > 0 else 0.0

    def update(self, step: int, values: dict[str, float] | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if values is not None:
            post = {k: f"{v:.3f}" for k, v in values.items()}
            post["img/s"] = f"{self.images_per_second(step):.0f}"
            self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
