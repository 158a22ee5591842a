"""Test-only method plugins that fail in controlled ways (registered by tests through a
temporary dist-info, the way a third-party package would register them)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from snnbench.methods.ann import StaticModel
from snnbench.methods.base import ConversionMethod


@dataclass(frozen=True)
class NoSettings:
    delay: float = 0.0


class Broken(ConversionMethod):
    """Raises during conversion."""

    name = "broken"
    settings_cls = NoSettings

    def convert(self, model, stats, ctx):
        raise RuntimeError("this method is broken on purpose")


class Sleepy(ConversionMethod):
    """Sleeps for ``delay`` seconds, then returns the ANN."""

    name = "sleepy"
    settings_cls = NoSettings

    def convert(self, model, stats, ctx):
        time.sleep(self.settings.delay)
        return StaticModel(model)


class DiesOnce(ConversionMethod):
    """Kills its worker process the first time it runs (marker file in $SNNBENCH_TEST_MARKER_DIR)."""

    name = "dies_once"
    settings_cls = NoSettings

    def convert(self, model, stats, ctx):
        marker = Path(os.environ["SNNBENCH_TEST_MARKER_DIR"]) / "died"
        if not marker.exists():
            marker.write_text("x")
            os._exit(3)
        return StaticModel(model)


class Swallower(ConversionMethod):
    """Busy for ``delay`` seconds and swallows every exception raised into it meanwhile (as
    torch.compile did with the old SIGALRM timeout), then returns the ANN."""

    name = "swallower"
    settings_cls = NoSettings

    def convert(self, model, stats, ctx):
        end = time.monotonic() + self.settings.delay
        while time.monotonic() < end:
            try:
                time.sleep(0.05)
            except BaseException:  # noqa: BLE001 - on purpose: library code that eats exceptions
                pass
        return StaticModel(model)
