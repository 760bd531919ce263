"""One asyncio event loop on its own thread, for aiortc; the bridge between it and trio.

Why a loop thread and not trio-asyncio: aiortc's ICE, DTLS, SRTP and RTP packetizing are asyncio and
CPU-heavy Python. On their own thread they never hold up trio's (the relay, the camera); under
trio-asyncio they would share trio's thread. Few calls cross (offer/answer, candidates, close, stats);
media crosses one way, by `post`.

Crossing:
- trio -> asyncio, fire and forget: `post(fn, *args)` (``call_soon_threadsafe``).
- trio -> asyncio, awaiting the result: `await run(coro)`. The coroutine's future, when done, wakes the
  trio task through its trio token (``run_sync_soon``): no thread blocks waiting. Cancelling the trio side
  cancels the coroutine.
- asyncio -> trio: `to_trio(fn, *args)`, callable from the loop thread (aiortc's callbacks, e.g. a PLI).

UDP ports: aioice binds every candidate socket to port 0. With `udp_ports` set, this loop's
``create_datagram_endpoint`` picks a free port of that range instead, so a firewall can open just it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

__all__ = ["AsyncioThread", "PortRangeExhaustedError"]

T = TypeVar("T")


class PortRangeExhaustedError(OSError):
    """Every port of `webrtc.udp_ports` is taken on that address."""


class _Loop(asyncio.SelectorEventLoop):
    """A selector loop whose UDP sockets bound to port 0 take a port of `ports` instead (if given)."""

    def __init__(self, ports: range | None) -> None:
        super().__init__()
        self._ports = ports
        self._next = 0

    async def create_datagram_endpoint(
        self, protocol_factory: Any, local_addr: Any = None, remote_addr: Any = None, **kw: Any
    ) -> Any:
        ports = self._ports
        if ports is None or local_addr is None or local_addr[1] != 0 or "sock" in kw:
            return await super().create_datagram_endpoint(
                protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kw
            )
        host = local_addr[0]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for i in range(len(ports)):
            port = ports[(self._next + i) % len(ports)]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            self._next = (self._next + i + 1) % len(ports)
            sock.setblocking(False)
            return await super().create_datagram_endpoint(protocol_factory, sock=sock)
        raise PortRangeExhaustedError(f"webrtc.udp_ports: no free port in {ports.start}-{ports.stop - 1}")


class AsyncioThread:
    """The loop thread. `start()` from trio (it records trio's token), `stop()` joins the thread.

    Args:
        name: The thread's name.
        udp_ports: Ports for aioice's sockets, or None for any.
    """

    def __init__(self, name: str = "webrtc-asyncio", udp_ports: range | None = None) -> None:
        self.loop: asyncio.AbstractEventLoop = _Loop(udp_ports)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def start(self) -> None:
        """Start the thread; call from trio."""
        self._token = trio.lowlevel.current_trio_token()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (pending callbacks are dropped) and join the thread, for at most `timeout` s."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call `fn(*args)` on the loop thread, soon; never waits. A no-op once the loop is closed."""
        with contextlib.suppress(RuntimeError):  # closed: the subsystem is stopping
            self.loop.call_soon_threadsafe(fn, *args)

    def to_trio(self, fn: Callable[..., Any], *args: Any) -> None:
        """From the loop thread: call `fn(*args)` on the trio thread, soon. A no-op once trio has ended."""
        assert self._token is not None, "start() first"
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and return its result; the trio task sleeps meanwhile.

        Raises:
            Whatever `coro` raises. Cancelling the caller cancels `coro` (and waits for it to end).
        """
        assert self._token is not None, "start() first"
        token = self._token
        done = trio.Event()
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await done.wait()
            raise
        return future.result()
