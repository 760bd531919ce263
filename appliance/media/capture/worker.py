"""Run capture tracks in worker threads and feed what they produce to a Bus producer on the trio thread.

Each track gets its own thread (`trio.to_thread.run_sync`) and a stop flag. Cancellation sets the flag and
calls the track's `interrupt()`; the thread notices within one frame interval and returns, and only then
does `run_tracks` return: a restarted capture never races the previous one for the device.

Items cross into trio once per frame with `TrioToken.run_sync_soon`, without waiting for the delivery
(bounded by a semaphore); the producer calls are synchronous and never wait, so a slow subscriber never
stalls a camera thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import trio

from appliance.bus import Producer, ProducerClosedError, ProducerEvictedError, TimestampError
from appliance.media.capture.tracks import CaptureClock, CaptureError, CaptureLostError, Item, Track
from appliance.media.meter import RateMeter
from appliance.media.packets import CodecConfig, Kind, Packet

__all__ = ["TrioSink", "run_tracks"]

log = logging.getLogger("appliance.capture")

MAX_IN_FLIGHT = 32  # emitted batches not yet delivered (about a second of frames)


class TrioSink:
    """The `Sink` tracks emit into: delivers to `producer` on the trio thread.

    Args:
        producer: The Bus producer of the camera's stream.
        clock: The capture clock.
    """

    def __init__(self, producer: Producer, clock: CaptureClock) -> None:
        self.producer = producer
        self.clock = clock
        self._token = trio.lowlevel.current_trio_token()
        self.video_packets = 0
        self.audio_packets = 0
        self.refused = 0
        self.bytes = 0
        self.meter = RateMeter()
        self.last_video_at: float | None = None  # trio.current_time() of the newest video packet
        self.first_video = trio.Event()
        self.gone: str | None = None
        self._in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)

    def emit(self, items: Sequence[Item]) -> None:
        if self.gone is not None:
            raise CaptureError(self.gone)
        # Fire and forget: the thread does not wait for trio to run the delivery (a round trip per frame
        # cost more CPU than the delivery itself). The semaphore bounds what is in flight, so a stalled
        # trio thread blocks the camera thread instead of queueing without limit.
        self._in_flight.acquire()
        self._token.run_sync_soon(self._deliver, items)

    def _deliver(self, items: Sequence[Item]) -> None:
        # Runs as a trio run_sync_soon callback: it must never raise.
        try:
            self._deliver_items(items)
        except Exception as e:  # a bug here must end capture, not the process
            log.exception("capture.deliver_failed stream=%s", self.producer.bus.name)
            self.gone = f"delivery failed: {e!r}"
        finally:
            self._in_flight.release()

    def _deliver_items(self, items: Sequence[Item]) -> None:
        producer = self.producer
        if not producer.live:
            if self.gone is None:
                self.gone = f"{producer.bus.name}: capture stopped"
            return
        for item in items:
            try:
                if isinstance(item, Packet):
                    producer.send_packet(item)
                    self.bytes += len(item.payload)
                    self.meter.add(trio.current_time(), len(item.payload))
                    if item.kind is Kind.VIDEO:
                        self.video_packets += 1
                        self.last_video_at = trio.current_time()
                        self.first_video.set()
                    else:
                        self.audio_packets += 1
                elif isinstance(item, CodecConfig):
                    producer.send_config(item)
                elif isinstance(item, Mapping):
                    producer.send_metadata(item)
            except TimestampError as e:
                # A source whose clock stepped back: drop the packet, keep the stream.
                self.refused += 1
                log.warning("capture.packet_refused stream=%s error=%s", producer.bus.name, e)
            except ProducerEvictedError:
                self.gone = f"{producer.bus.name} was taken over by another publisher"
                return
            except ProducerClosedError:
                self.gone = f"{producer.bus.name}: capture stopped"
                return


async def run_tracks(tracks: Sequence[Track], sink: TrioSink) -> None:
    """Run every track in its own thread until one fails or ends, or until cancelled.

    Raises:
        CaptureLostError: A track ended on its own (its source ran dry) or failed; the first failure wins.
    """
    async with trio.open_nursery() as nursery:
        for track in tracks:
            nursery.start_soon(_run_track, track, sink)


async def _run_track(track: Track, sink: TrioSink) -> None:
    stop = threading.Event()

    async def stop_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()
            track.interrupt()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_cancel)
        # abandon_on_cancel=False: the thread owns a device or a process, and a restart must not open it
        # again before this one let go. The stop flag makes it return within a frame.
        await trio.to_thread.run_sync(track.run, sink, stop, abandon_on_cancel=False)
        if not stop.is_set():
            raise CaptureLostError(f"{track.name} track ended: the source stopped delivering")
        nursery.cancel_scope.cancel()
