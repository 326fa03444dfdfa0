"""Where a job's progress goes while the engine runs it."""

from __future__ import annotations

from typing import Protocol

from silo_contract.reports import CycleResult, EpochEvent


class Reporter(Protocol):
    """Hears a job's progress: every epoch's event, every cycle's result, and a
    note on what the job is doing while no epoch is reported (the Oracle's
    search), which None clears."""

    def on_epoch(self, event: EpochEvent) -> None: ...
    def on_cycle(self, result: CycleResult) -> None: ...
    def on_note(self, note: str | None) -> None: ...


class NullReporter:
    """The reporter of a job nobody watches: it hears everything and keeps nothing.
    A reporter that cares for only some of the calls may start from this one."""

    def on_epoch(self, event: EpochEvent) -> None:
        pass

    def on_cycle(self, result: CycleResult) -> None:
        pass

    def on_note(self, note: str | None) -> None:
        pass
