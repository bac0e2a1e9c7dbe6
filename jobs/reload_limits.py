"""The limits hot-reload check: cheap when nothing changed (one stat of the file)."""

from __future__ import annotations

from dataclasses import dataclass

from services.limits_reloader import LimitsReloader


@dataclass(frozen=True)
class ReloadLimitsJob:
    reloader: LimitsReloader

    def __call__(self) -> None:
        self.reloader.reload()  # an invalid file is logged and counted there; it never raises
