"""A progress bar that configs can attach with an output transform (ignite's takes it only in `attach`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ignite.engine import Engine

logger = logging.getLogger(__name__)


class ProgressBar:
    """ignite's tqdm `ProgressBar`, showing `output_transform(engine.state.output)` (e.g. the loss terms).

    Args:
        output_transform: what to show per iteration (None: nothing but the bar).
        persist: keep the finished bar on screen.
    """

    def __init__(self, output_transform: Callable[[Any], Any] | None = None, persist: bool = False) -> None:
        self.output_transform = output_transform
        self.persist = persist

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import ProgressBar as IgniteProgressBar

        bar = IgniteProgressBar(persist=self.persist)
        if self.output_transform is None:
            bar.attach(engine)
        else:
            bar.attach(engine, output_transform=self.output_transform)


class InferenceProgress:
    """Progress and outcome of bundle inference over a folder, for the person (or script) running it.

    Every `interval` seconds it logs `inference: 410/2000 images (13.7 images/s, about 116 s left)`; at the end
    `inference finished: ... predicted, k unreadable (skipped), j results not written`. `finish()`, the last
    `run` step of inference.json, then exits with the status `tinyusfm-monai dicom infer` uses: 3 when inputs
    were skipped as unreadable, 4 when a result could not be written (0 otherwise), so a script sees that
    files were left out without reading the log.

    Args:
        total: images in the datalist.
        postprocessing: the `SkipOnErrorCompose` whose `skipped` counts results that were not written.
        interval: seconds between progress lines.
    """

    EXIT_SOME_SKIPPED, EXIT_SOME_FAILED = 3, 4

    def __init__(self, total: int, postprocessing: Any = None, interval: float = 10.0) -> None:
        self.total = int(total)
        self.postprocessing = postprocessing
        self.interval = float(interval)
        self.done = 0
        self._t0 = self._last = 0.0

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        import time

        self.done = 0
        self._t0 = self._last = time.monotonic()
        logger.info("inference: %d image(s) to predict", self.total)

    def _iteration(self, engine: Engine) -> None:
        import time

        batch = engine.state.batch
        image = batch.get("image") if isinstance(batch, dict) else None
        self.done += int(image.shape[0]) if hasattr(image, "shape") else 1
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            rate = self.done / max(now - self._t0, 1e-9)
            left = max(self.total - self.done, 0) / rate if rate else float("inf")
            logger.info("inference: %d/%d images (%.1f images/s, about %.0f s left)", self.done, self.total, rate, left)

    @property
    def unwritten(self) -> int:
        return int(getattr(self.postprocessing, "skipped", 0) or 0)

    @property
    def unreadable(self) -> int:
        return max(self.total - self.done, 0)

    def _completed(self, engine: Engine) -> None:
        logger.info(
            "inference finished: %d/%d image(s) predicted, %d unreadable (skipped), %d result(s) not written "
            "(causes logged above)",
            self.done - self.unwritten,
            self.total,
            self.unreadable,
            self.unwritten,
        )

    def finish(self) -> None:
        """Exit 4 (results not written) or 3 (inputs skipped) as `dicom infer` does; return when all went well."""
        if self.unwritten:
            raise SystemExit(self.EXIT_SOME_FAILED)
        if self.unreadable:
            raise SystemExit(self.EXIT_SOME_SKIPPED)
