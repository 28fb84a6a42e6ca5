"""The one progress display of the CLI's commands.

Why one: every long command shows the same thing the same way: a line per task on stderr (stdout
stays clean for results and `--json`), drawn only when stderr is a terminal, gone when the command
is done; counts where the total is known, a pulsing bar where it is not.
"""

from __future__ import annotations

from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from .root import err


class _Count(MofNCompleteColumn):
    """done/total, or nothing for a task without a total."""

    def render(self, task: Task) -> Text:
        return Text("") if task.total is None else super().render(task)


def progress_bars() -> Progress:
    """A rich Progress on the CLI's stderr console (use as a context manager)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), _Count(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def per_domain(progress: Progress, label: str) -> Callable[[str, int, int], None]:
    """A callback (domain, done, total) that keeps one bar per domain, named "label: domain"
    (what uem.engine.milvus.MilvusIndex reports while it uploads)."""
    tasks: dict[str, int] = {}

    def update(domain: str, done: int, total: int) -> None:
        if domain not in tasks:
            tasks[domain] = progress.add_task(f"{label}: {domain}", total=total)
        progress.update(tasks[domain], completed=done)

    return update
