"""A progress bar that configs can attach with an output transform (ignite's takes it only in `attach`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.engine import Engine


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
