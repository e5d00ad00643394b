"""Named background tasks of an API plane: started once each on the running loop, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundTasks:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._tasks: dict[str, asyncio.Task] = {}

    def start(self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]]) -> bool:
        """Start ``factory()`` as task ``name`` unless it already runs; False when it does."""
        task = self._tasks.get(name)
        if task is not None and not task.done():
            return False
        self._tasks[name] = asyncio.get_running_loop().create_task(factory(), name=f"{self.prefix}-{name}")
        return True

    def running(self) -> list[str]:
        return sorted(name for name, task in self._tasks.items() if not task.done())

    async def stop(self) -> None:
        """Cancel every task and wait for each to end (their errors are theirs to log)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
