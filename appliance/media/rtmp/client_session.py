"""The client side of an RTMP connection (sans-IO): connect, createStream, publish or play.

Theory of operation
-------------------
    HANDSHAKE --S0S1S2--> CONNECTING (connect sent) --_result--> CONNECTED
    CONNECTING --_error--> ERROR (RemoteProtocolError names the server's code)

`initiate()` queues C0C1; when the handshake completes the session sends Set Chunk Size and `connect` by
itself. After that the driver calls `create_stream()`, then `publish()` or `play()`, and reads the
answers as `StatusReceived` events (`_result` of createStream carries the stream id; `onStatus` carries
NetStream.Publish.Start / NetStream.Play.Start or an error). Media goes out with `send_media`.
The relay's push egress and the tests' players use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from appliance.media.rtmp.chunk import MessageType
from appliance.media.rtmp.errors import LocalProtocolError, RemoteProtocolError
from appliance.media.rtmp.events import CommandReceived, Event, StatusReceived
from appliance.media.rtmp.handshake import ClientHandshake
from appliance.media.rtmp.session import CSID_AUDIO, CSID_STREAM, CSID_VIDEO, Connection, State

__all__ = ["ClientSession"]


class ClientSession(Connection):
    """One outgoing RTMP connection.

    Args:
        app: The application (`live`), with its `?query` if the server wants one.
        tc_url: The URL as the server should see it (`rtmp://host:1935/live`).
        fourcc_list: Enhanced RTMP codecs to announce (`hvc1`, `av01`, ...); empty for a legacy client.
        flash_ver: The flashVer string to send.
        rng, epoch_ms: Handshake randomness and time.
        chunk_size: Our outgoing chunk size.
        digest: Use the digest handshake (as librtmp and FFmpeg do).
    """

    def __init__(
        self,
        *,
        app: str,
        tc_url: str,
        fourcc_list: tuple[str, ...] = (),
        flash_ver: str = "FMLE/3.0 (compatible; appliance)",
        rng: Callable[[int], bytes] = os.urandom,
        epoch_ms: int = 0,
        chunk_size: int = 4096,
        digest: bool = True,
    ) -> None:
        super().__init__(chunk_size=chunk_size)
        self._client_handshake = ClientHandshake(rng=rng, epoch_ms=epoch_ms, digest=digest)
        self._handshake = self._client_handshake
        self._app = app
        self._tc_url = tc_url
        self._fourccs = fourcc_list
        self._flash_ver = flash_ver
        self._next_tid = 2.0  # 1 is connect's
        self.server_properties: Mapping[str, object] = {}

    def initiate(self) -> None:
        """Queue C0 and C1."""
        self._client_handshake.initiate()
        self.send_raw(self._client_handshake.data_to_send())

    def _handshake_done(self) -> None:
        self.set_chunk_size(self._wanted_chunk_size)
        obj: dict[str, object] = {
            "app": self._app,
            "type": "nonprivate",
            "flashVer": self._flash_ver,
            "tcUrl": self._tc_url,
        }
        if self._fourccs:
            obj["fourCcList"] = list(self._fourccs)
        self.send_command(0, "connect", 1.0, obj)

    def _tid(self) -> float:
        tid = self._next_tid
        self._next_tid += 1
        return tid

    def _require_connected(self, what: str) -> None:
        if self.state is not State.CONNECTED:
            raise LocalProtocolError(f"{what} in state {self.state.name}")

    def create_stream(self) -> float:
        """Send createStream; the `_result` with this transaction id carries the stream id.

        Returns:
            The transaction id.
        """
        self._require_connected("createStream")
        tid = self._tid()
        self.send_command(0, "createStream", tid, None)
        return tid

    def publish(self, stream_id: int, name: str, mode: str = "live") -> None:
        """Send publish (FCPublish/releaseStream are Flash Media Server habits no server needs)."""
        self._require_connected("publish")
        self.send_command(stream_id, "publish", 0.0, None, name, mode)

    def play(self, stream_id: int, name: str) -> None:
        """Send play (live, from now)."""
        self._require_connected("play")
        self.send_command(stream_id, "play", 0.0, None, name, -1000.0)

    def delete_stream(self, stream_id: int) -> None:
        """Send deleteStream."""
        self.send_command(0, "deleteStream", 0.0, None, float(stream_id))

    def send_media(self, stream_id: int, type_id: int, timestamp: int, payload: bytes) -> None:
        """Queue an audio (8), video (9) or data (18) message."""
        csid = (
            CSID_AUDIO
            if type_id == MessageType.AUDIO
            else CSID_VIDEO
            if type_id == MessageType.VIDEO
            else CSID_STREAM
        )
        self.send_message(csid, type_id, stream_id, timestamp, payload)

    def _command(
        self, stream_id: int, name: str, tid: float, args: tuple[object, ...], events: list[Event]
    ) -> None:
        if name in ("_result", "_error", "onStatus", "onFCPublish", "onFCUnpublish"):
            info = next((a for a in reversed(args) if isinstance(a, Mapping)), {})
            level, code, description = (str(info.get(k, "")) for k in ("level", "code", "description"))
            if tid == 1.0 and self.state is State.CONNECTING:
                if name != "_result":
                    self.state = State.ERROR
                    raise RemoteProtocolError(f"connect refused: {code} {description}".strip())
                props = args[0] if args and isinstance(args[0], Mapping) else {}
                self.server_properties = props
                self.state = State.CONNECTED
            events.append(
                StatusReceived(
                    stream_id=stream_id,
                    name=name,
                    transaction_id=tid,
                    level=level,
                    code=code,
                    description=description,
                    args=args,
                )
            )
        else:
            events.append(CommandReceived(stream_id=stream_id, name=name, transaction_id=tid, args=args))
            if tid:
                self.send_command(
                    0, "_error", tid, None, {"level": "error", "code": "NetConnection.Call.Failed"}
                )
