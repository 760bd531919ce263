"""From Bus to RTMP play: Bus events into chunks on a player's connection.

Pure: the server awaits the subscription and hands each event to `PlayAdapter.handle`, which queues
bytes on the player's session. A media message's chunks depend only on the packet, the chunk size, the
message stream id and the timestamp (the chunk writer always starts with a format-0 header), so they are
built once per Bus and shared through a `ChunkCache` by every player with the same chunk size and stream
id (in practice all of them: every client plays on stream 1 at the chunk size we announce).
"""

from __future__ import annotations

from collections import OrderedDict

from appliance.bus import (
    BusEvent,
    ConfigChanged,
    MetadataChanged,
    PacketReceived,
    PacketsDropped,
    ProducerJoined,
    ProducerLeft,
)
from appliance.media import flv
from appliance.media.packets import CodecConfig, Kind
from appliance.media.rtmp.chunk import MessageType, encode_message
from appliance.media.rtmp.session import CSID_AUDIO, CSID_STREAM, CSID_VIDEO, Connection

__all__ = ["AUDIO_HOLD_MS", "ChunkCache", "PlayAdapter", "UnsupportedCodecError"]

AUDIO_HOLD_MS = 40


class UnsupportedCodecError(Exception):
    """The stream's codec needs Enhanced RTMP and the player did not announce it."""


class ChunkCache:
    """Built chunks of recent packets of one Bus, keyed by packet event, chunk size and stream id.

    Args:
        size: Entries kept. Players within this many messages of each other share the work.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        # The event is kept in the value so its id() cannot be reused while the entry lives.
        self._entries: OrderedDict[tuple[int, int, int], tuple[PacketReceived, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def chunks(
        self, event: PacketReceived, chunk_size: int, stream_id: int, audio: CodecConfig | None
    ) -> bytes:
        """Return the chunks of `event`'s packet for a player with this chunk size and stream id."""
        key = (id(event), chunk_size, stream_id)
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            return entry[1]
        self.misses += 1
        packet = event.packet
        if packet.kind is Kind.VIDEO:
            data = encode_message(
                CSID_VIDEO, MessageType.VIDEO, stream_id, packet.dts_ms, flv.video_body(packet), chunk_size
            )
        elif packet.kind is Kind.AUDIO:
            data = encode_message(
                CSID_AUDIO,
                MessageType.AUDIO,
                stream_id,
                packet.dts_ms,
                flv.audio_body(packet, audio),
                chunk_size,
            )
        else:
            data = encode_message(
                CSID_STREAM, MessageType.DATA_AMF0, stream_id, packet.dts_ms, packet.payload, chunk_size
            )
        entries = self._entries
        entries[key] = (event, data)
        if len(entries) > self._size:
            entries.popitem(last=False)
        return data


class PlayAdapter:
    """One play on one connection: turns the Bus's events into messages on the session.

    Args:
        session: The player's connection core.
        stream_id: The message stream the client plays on.
        name: The stream name, for status descriptions.
        fourccs: Codecs the client announced with Enhanced RTMP (`hvc1`, `av01`, `vp09`, or `*`).
        cache: The Bus's shared chunk cache.

    Attributes:
        bytes_out: Bytes queued for this play.
        joined: Producers seen join while playing (the first is the one playing at start).
    """

    def __init__(
        self, session: Connection, stream_id: int, name: str, fourccs: tuple[str, ...], cache: ChunkCache
    ) -> None:
        self._session = session
        self._stream_id = stream_id
        self._name = name
        self._fourccs = fourccs
        self._cache = cache
        self._audio: CodecConfig | None = None
        self._last_ts = 0
        self._live = False
        self._ever_live = False
        self.bytes_out = 0
        self.messages_out = 0
        self._urgent = False  # something other than audio is queued since the last send
        self._held_audio_from: int | None = None  # dts of the first audio packet held back

    def flush_due(self) -> bool:
        """Whether what is queued should be sent now.

        Audio alone is held until `AUDIO_HOLD_MS` of it (by timestamp) is queued or anything else comes:
        sends then carry audio together with the next video frame, which halves the writes of a typical
        30 fps + AAC stream (about 77 messages a second, 30 of them video) at no cost in video latency
        and at most `AUDIO_HOLD_MS` of audio delay. Players keep sync by timestamps, not arrival times.
        """
        return self._urgent or (
            self._held_audio_from is not None and self._last_ts - self._held_audio_from >= AUDIO_HOLD_MS
        )

    @property
    def holding(self) -> bool:
        """Whether audio is queued and held back (the fan-out sends it after `AUDIO_HOLD_MS` anyway)."""
        return self._held_audio_from is not None

    def flushed(self) -> None:
        """Tell the adapter its queued messages were handed to the socket."""
        self._urgent = False
        self._held_audio_from = None

    def handle(self, event: BusEvent) -> None:
        """Queue what `event` means for the player.

        Raises:
            UnsupportedCodecError: A video codec the player did not announce (after queueing an error
                status): the play should end.
        """
        s = self._session
        if isinstance(event, PacketReceived):
            packet = event.packet
            data = self._cache.chunks(event, s.out_chunk_size, self._stream_id, self._audio)
            self._last_ts = packet.dts_ms
            if packet.kind is Kind.AUDIO:
                if self._held_audio_from is None:
                    self._held_audio_from = packet.dts_ms
            else:
                self._urgent = True
            s.send_raw(data)
            self.bytes_out += len(data)
            self.messages_out += 1
        else:
            self._urgent = True
        if isinstance(event, ConfigChanged):
            self._config(event.config)
        elif isinstance(event, MetadataChanged):
            body = flv.metadata_body(event.metadata)
            s.send_message(CSID_STREAM, MessageType.DATA_AMF0, self._stream_id, self._last_ts, body)
        elif isinstance(event, ProducerJoined):
            self._live = True
            if self._ever_live:
                s.send_stream_begin(self._stream_id)
                s.send_status(
                    self._stream_id, "NetStream.Play.PublishNotify", f"{self._name} is now published."
                )
            self._ever_live = True
        elif isinstance(event, ProducerLeft):
            if self._live:
                self._live = False
                s.send_status(
                    self._stream_id, "NetStream.Play.UnpublishNotify", f"{self._name} is now unpublished."
                )
        elif isinstance(event, PacketsDropped):
            pass  # counted by the Bus; the next packet is a keyframe

    def _config(self, config: CodecConfig) -> None:
        s = self._session
        if config.kind is Kind.AUDIO:
            self._audio = config
            if not config.data and not flv.needs_enhanced(config.codec):
                return  # MP3 and friends have no sequence header
            body = flv.audio_config_body(config)
            s.send_message(CSID_AUDIO, MessageType.AUDIO, self._stream_id, self._last_ts, body)
            return
        if config.kind is not Kind.VIDEO:
            return
        if flv.needs_enhanced(config.codec):
            tag = flv.fourcc(config.codec).decode()
            if tag not in self._fourccs and "*" not in self._fourccs:
                s.send_status(
                    self._stream_id,
                    "NetStream.Play.Failed",
                    f"{self._name} is {config.codec.name} video, which needs Enhanced RTMP: this player did "
                    f"not list {tag!r} in connect's fourCcList (use FFmpeg 6.1+, OBS 30+ or a WebRTC viewer)",
                    level="error",
                )
                s.send_stream_eof(self._stream_id)
                raise UnsupportedCodecError(f"{config.codec.name} needs Enhanced RTMP ({tag})")
        body = flv.video_config_body(config)
        s.send_message(CSID_VIDEO, MessageType.VIDEO, self._stream_id, self._last_ts, body)
