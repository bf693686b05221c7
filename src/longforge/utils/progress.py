"""One rich progress bar for long work (items done / total, ETA), or a no-op when disabled."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, description=None)``; the bar goes to stderr so stdout stays machine-readable."""
    if not enabled:
        yield lambda n=1, description=None: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"{label} {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    task = bar.add_task("", total=total)
    bar.start()

    def advance(n: int = 1, description: str | None = None) -> None:
        if description is None:
            bar.update(task, advance=n)
        else:
            bar.update(task, advance=n, description=description)

    try:
        yield advance
    finally:
        bar.stop()
