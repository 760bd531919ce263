"""One asyncio event loop on its own thread, for aiortc; trio awaits coroutines run there.

aiortc's ICE, DTLS and SRTP are asyncio and CPU-heavy Python: on their own thread they never hold up
trio's (the relay, the camera), and trio-asyncio's cross-loop machinery is not needed for the few calls
that cross (offer/answer, close). Media crosses one way, by `post` (call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

__all__ = ["AsyncioThread"]

T = TypeVar("T")


class AsyncioThread:
    """Start with `start()`, stop with `stop()` (joins the thread)."""

    def __init__(self, name: str = "webrtc-asyncio") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call `fn(*args)` on the loop thread, soon; never waits."""
        self.loop.call_soon_threadsafe(fn, *args)

    async def run(self, coro: Coroutine[Any, Any, T], limit_s: float = 30.0) -> T:
        """Run `coro` on the loop; trio waits without blocking (a worker thread waits on the future)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return await trio.to_thread.run_sync(future.result, limit_s, abandon_on_cancel=True)
        except trio.Cancelled:
            future.cancel()
            raise
