"""A Bus subscriber: its bounded queue, drop-to-keyframe, cut-off and the receive side.

The theory of operation (sync points, drop policy, cut-off) is in the docstring of `appliance.bus`, which
also re-exports `Subscription`. Its `Bus` creates and feeds it; consumers await `receive()`.
"""

from __future__ import annotations

import enum
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from appliance.media.bus_events import (
    BusEvent,
    ConfigChanged,
    MetadataChanged,
    PacketReceived,
    PacketsDropped,
    ProducerJoined,
    SubscriberCutOffError,
    SubscriberStats,
)
from appliance.media.packets import Kind

if TYPE_CHECKING:
    from appliance.bus import Bus

__all__ = ["Subscription"]

# A drop must leave room for PacketsDropped and the keyframe that ends it.
_RESUME_ROOM = 2


class _SubState(enum.Enum):
    OPEN = 1
    ENDED = 2  # the Bus closed: drain the queue, then EndOfChannel
    CLOSED = 3  # the subscriber closed: EndOfChannel at once
    CUT_OFF = 4


class Subscription:
    """One reader of a Bus, with its own bounded queue; get one from `Bus.subscribe()`.

    Read with `await receive()` or `async for event in subscription`. Use it as a context manager or call
    `close()`; closing ends the iteration (and wakes a task blocked in `receive()`).
    """

    def __init__(self, bus: Bus, *, max_queue: int, max_lag_ms: int, name: str) -> None:
        self._bus = bus
        self._name = name
        self._max_queue = max_queue
        self._max_lag_ms = max_lag_ms
        self._queue: deque[BusEvent] = deque()
        self._pending_dts: deque[int] = deque()  # dts of each queued packet, in queue order
        self._lot = trio.lowlevel.ParkingLot()
        self._state = _SubState.OPEN
        self._cut_message = ""
        self._cut_lag_ms = 0
        self._waiting = True  # media (re)starts at the next sync point
        self._video_started = False
        self._dropping = False
        self._drop_count = 0  # packets lost since the last PacketsDropped was queued
        self._drop_from_dts = 0  # dts of the oldest packet lost in the current drop
        self._delivered = 0
        self._bytes_delivered = 0
        self._dropped = 0

    @property
    def name(self) -> str:
        """The name given to `subscribe()`."""
        return self._name

    @property
    def bus(self) -> Bus:
        """The Bus this subscription reads."""
        return self._bus

    def stats(self) -> SubscriberStats:
        """Return a snapshot of this subscriber's counters.

        Returns:
            Its stats now.
        """
        return SubscriberStats(
            name=self._name,
            delivered=self._delivered,
            bytes_delivered=self._bytes_delivered,
            dropped=self._dropped,
            lag_ms=self._lag_ms(),
            queued=len(self._queue),
            max_queue=self._max_queue,
            max_lag_ms=self._max_lag_ms,
            dropping=self._dropping,
            cut_off=self._state is _SubState.CUT_OFF,
        )

    def receive_nowait(self) -> BusEvent:
        """Return the next event if one is queued.

        Returns:
            The event.

        Raises:
            trio.WouldBlock: Nothing is queued yet.
            trio.EndOfChannel: The subscription was closed, or the Bus closed and the queue is drained.
            SubscriberCutOffError: It fell more than `max_lag_ms` behind and was detached.
        """
        if self._queue:
            event = self._queue.popleft()
            if isinstance(event, PacketReceived):
                self._pending_dts.popleft()
                self._delivered += 1
                self._bytes_delivered += len(event.packet.payload)
            return event
        if self._state is _SubState.CUT_OFF:
            raise SubscriberCutOffError(self._cut_message, lag_ms=self._cut_lag_ms)
        if self._state is not _SubState.OPEN:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> BusEvent:
        """Wait for the next event.

        Returns:
            The event.

        Raises:
            trio.EndOfChannel: The subscription was closed, or the Bus closed and the queue is drained.
            SubscriberCutOffError: It fell more than `max_lag_ms` behind and was detached.
        """
        # The checkpoint discipline of trio's own channels: a cancel point first, a schedule point always.
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self._lot.park()
                parked = True
                continue
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    def close(self) -> None:
        """Detach from the Bus and drop queued events. Idempotent."""
        if self._state is _SubState.OPEN:
            self._bus._detach(self)
        if self._state is not _SubState.CUT_OFF:
            self._state = _SubState.CLOSED
            self._queue.clear()
            self._pending_dts.clear()
        self._lot.unpark_all()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> BusEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    # The Bus's side. Every method below runs inside a producer call and must not block.

    def _push(self, event: BusEvent) -> None:
        if self._state is not _SubState.OPEN:
            return
        if len(self._queue) >= self._max_queue and not self._make_room():
            return
        self._queue.append(event)
        self._lot.unpark_all()

    def _on_producer_joined(self) -> None:
        self._push(ProducerJoined())
        self._waiting = True
        self._video_started = False

    def _offer(self, event: PacketReceived, video_mode: bool) -> None:
        if self._state is not _SubState.OPEN:
            return
        self._accept(event, video_mode)
        # Checked on every packet, whatever became of it: each one moves the Bus's newest dts.
        lag = self._lag_ms()
        if self._state is _SubState.OPEN and lag > self._max_lag_ms:
            self._cut_off(f"lag {lag} ms > max_lag_ms {self._max_lag_ms}", lag)

    def _accept(self, event: PacketReceived, video_mode: bool) -> None:
        packet = event.packet
        sync = (packet.kind is Kind.VIDEO and packet.keyframe) if video_mode else True
        if not self._dropping and len(self._queue) >= self._max_queue and not self._make_room():
            return
        if self._dropping:
            if not sync:
                self._dropped += 1
                self._drop_count += 1
                return
            if len(self._queue) > self._max_queue - _RESUME_ROOM and not self._make_room():
                return
            self._dropping = False
            self._queue.append(PacketsDropped(count=self._drop_count))
            self._drop_count = 0
            self._waiting = False
            self._video_started = packet.kind is Kind.VIDEO
        elif self._waiting:
            if not sync:
                return
            self._waiting = False
            self._video_started = packet.kind is Kind.VIDEO
        elif packet.kind is Kind.VIDEO and not self._video_started:
            # Video that appears after the subscriber synced on audio must still start at a keyframe.
            if not packet.keyframe:
                return
            self._video_started = True
        self._queue.append(event)
        self._pending_dts.append(packet.dts_ms)
        self._lot.unpark_all()

    def _make_room(self) -> bool:
        # Drop every queued packet (media restarts at the next sync point) but keep the control events a
        # consumer needs to decode what follows; of those, only the newest config per kind and the newest
        # metadata still matter once no packet sits between them.
        if self._pending_dts:
            if not self._dropping:
                self._dropping = True
                self._drop_from_dts = self._pending_dts[0]
            self._dropped += len(self._pending_dts)
            self._drop_count += len(self._pending_dts)
            self._pending_dts.clear()
        kept: list[BusEvent] = []
        config_kinds: set[Kind] = set()
        have_metadata = False
        for event in reversed(self._queue):
            if isinstance(event, PacketReceived):
                continue
            if isinstance(event, ConfigChanged):
                if event.config.kind in config_kinds:
                    continue
                config_kinds.add(event.config.kind)
            elif isinstance(event, MetadataChanged):
                if have_metadata:
                    continue
                have_metadata = True
            elif isinstance(event, PacketsDropped) and self._dropping:
                self._drop_count += event.count  # one PacketsDropped will report both drops
                continue
            kept.append(event)
        kept.reverse()
        self._queue = deque(kept)
        if len(self._queue) > self._max_queue - _RESUME_ROOM:
            self._cut_off(f"queue full of {len(self._queue)} control events", self._lag_ms())
            return False
        return True

    def _lag_ms(self) -> int:
        newest = self._bus._newest_dts
        if self._state is _SubState.CUT_OFF:
            return self._cut_lag_ms
        if newest is None:
            return 0
        if self._dropping:
            return max(0, newest - self._drop_from_dts)
        if self._pending_dts:
            return max(0, newest - self._pending_dts[0])
        return 0

    def _cut_off(self, reason: str, lag_ms: int) -> None:
        self._cut_message = f"subscriber {self._name!r} on bus {self._bus.name!r} cut off: {reason}"
        self._cut_lag_ms = lag_ms
        self._state = _SubState.CUT_OFF
        self._queue.clear()
        self._pending_dts.clear()
        self._bus._detach(self)
        self._lot.unpark_all()

    def _end(self) -> None:
        if self._state is _SubState.OPEN:
            self._state = _SubState.ENDED
            self._lot.unpark_all()
