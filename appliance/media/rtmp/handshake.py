"""RTMP handshake, server and client side (Adobe RTMP spec 5.2, plus the Flash Player 9+ digest scheme).

Theory of operation
-------------------
Each side sends a one-byte version (C0/S0, always 3) and a 1536-byte packet (C1/S1), then echoes the
peer's packet back (C2/S2):

    client                                  server
    C0 C1            ---------------->      (waits for C0 C1)
                     <----------------      S0 S1 S2
    (waits for S0 S1) C2 ------------>      (waits for C2)      -> complete
    (waits for S2)                                              -> complete

Both cores here share one receive loop with the stages FIRST (C0+C1, or S0+S1: 1537 bytes), SECOND (C2 or
S2: 1536 bytes), DONE and FAILED. Input may be split anywhere, down to single bytes. Only what a stage
needs is buffered (at most 1537 bytes); whatever arrives after C2/S2 is the start of the chunk stream and
is handed back by `leftover()`, untouched. A version other than 3 fails as soon as its byte arrives.

The digest handshake. The 5.2 packet is time(4) + zero(4) + random(1528), but Flash Player 9+, librtmp,
rtmpdump and FFmpeg put their version in bytes 4-7 and an HMAC-SHA256 digest somewhere in the random part
("Genuine Adobe Flash Player 001" is the key); H.264-era Flash Players refuse a server that does not
answer in kind. Where the 32-byte digest sits depends on one of two schemes:

- scheme 0: offset = (sum of bytes 8..11) % 728 + 12, inside the first half;
- scheme 1: offset = (sum of bytes 772..775) % 728 + 776, inside the second half.

The digest is HMAC-SHA256(key, packet without the 32 digest bytes). A server that finds the client's
digest answers with an S1 signed the same way under the same scheme (key "Genuine Adobe Flash Media
Server 001"), and an S2 of random bytes whose last 32 are HMAC-SHA256(HMAC-SHA256(full FMS key, client
digest), the rest). The client's C2 mirrors that with the full Flash Player key and the server digest.
A packet without a valid digest (or with version 0) gets the plain 5.2 treatment: S2 and C2 echo the
peer's packet. C2 and S2 are not checked: many peers fill them with whatever they like.

The keys below are the public constants of the scheme (the Flash Player and FMS key strings followed by
the same 32 bytes), not secrets.

Randomness and time are injected (`rng`, `epoch_ms`): nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import hmac
import os
from collections.abc import Callable

from appliance.media.rtmp.errors import LocalProtocolError

__all__ = [
    "FMS_KEY",
    "FP_KEY",
    "HANDSHAKE_SIZE",
    "RTMP_VERSION",
    "ClientHandshake",
    "HandshakeError",
    "ServerHandshake",
]

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536  # C1, S1, C2, S2

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL  # 62 bytes; the first 30 sign C1
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL  # 68 bytes; the first 36 sign S1
_FP_KEY_SHORT = FP_KEY[:30]
_FMS_KEY_SHORT = FMS_KEY[:36]

_DIGEST_SIZE = 32
_SERVER_VERSION = bytes((4, 5, 0, 1))  # what FMS 4.5 reports; clients only check it is non-zero
_CLIENT_VERSION = bytes((0x80, 0x00, 0x07, 0x02))  # as librtmp: non-zero asks for the digest handshake
_ZERO_VERSION = bytes(4)
_RANDOM_SIZE = HANDSHAKE_SIZE - 8


class HandshakeError(Exception):
    """The peer broke the handshake (wrong version, or closed the connection before it finished)."""


class _Stage(enum.Enum):
    IDLE = 0  # client before initiate()
    FIRST = 1  # waiting for C0+C1 (server) or S0+S1 (client)
    SECOND = 2  # waiting for C2 (server) or S2 (client)
    DONE = 3
    FAILED = 4


_Version = tuple[int, int, int, int]


# -- digests ----------------------------------------------------------------------------------------


def _digest_offset(packet: bytes | bytearray, scheme: int) -> int:
    base = 8 if scheme == 0 else 772
    return sum(packet[base : base + 4]) % 728 + base + 4


def _hmac(key: bytes, data: bytes | bytearray) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _packet_digest(packet: bytes | bytearray, offset: int, key: bytes) -> bytes:
    return _hmac(key, packet[:offset] + packet[offset + _DIGEST_SIZE :])


def _find_digest(packet: bytes, key: bytes) -> tuple[int, bytes] | None:
    """The (scheme, digest) of a packet signed with `key`, or None. Scheme 1 is tried first."""
    for scheme in (1, 0):
        offset = _digest_offset(packet, scheme)
        digest = packet[offset : offset + _DIGEST_SIZE]
        if hmac.compare_digest(digest, _packet_digest(packet, offset, key)):
            return scheme, digest
    return None


def _random(rng: Callable[[int], bytes], n: int) -> bytes:
    data = rng(n)
    if len(data) != n:
        raise LocalProtocolError(f"rng({n}) returned {len(data)} bytes")
    return data


def _signed_packet(head: bytes, rng: Callable[[int], bytes], key: bytes, scheme: int) -> bytes:
    """A C1/S1: `head` (time and version, 8 bytes), random bytes with a digest at the scheme's offset."""
    packet = bytearray(head + _random(rng, _RANDOM_SIZE))
    offset = _digest_offset(packet, scheme)
    packet[offset : offset + _DIGEST_SIZE] = _packet_digest(packet, offset, key)
    return bytes(packet)


def _signed_reply(rng: Callable[[int], bytes], peer_digest: bytes, full_key: bytes) -> bytes:
    """A digest-scheme C2/S2: random bytes ending in an HMAC keyed by the peer's digest."""
    body = _random(rng, HANDSHAKE_SIZE - _DIGEST_SIZE)
    return body + _hmac(_hmac(full_key, peer_digest), body)


# -- the shared receive loop ------------------------------------------------------------------------


class _Handshake(abc.ABC):
    _peer: str  # "client" or "server", for error messages

    def __init__(self, rng: Callable[[int], bytes], epoch_ms: int) -> None:
        self._rng = rng
        self._time = (epoch_ms & 0xFFFFFFFF).to_bytes(4, "big")
        self._stage = _Stage.FIRST
        self._buf = bytearray()
        self._out = bytearray()
        self._received = 0
        self._leftover = b""
        self.peer_version: _Version | None = None
        self.digest_used = False

    @property
    def complete(self) -> bool:
        """True once the peer's second packet has arrived; the chunk stream follows."""
        return self._stage is _Stage.DONE

    def data_to_send(self) -> bytes:
        """Return and clear the bytes queued for the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def leftover(self) -> bytes:
        """Bytes received after the handshake: the start of the chunk stream (empty until complete)."""
        return self._leftover

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer, split anywhere; replies are queued for `data_to_send`.

        Args:
            data: Received bytes; b"" means the peer closed the connection.

        Raises:
            HandshakeError: A version other than 3, or EOF before the handshake finished. The core is
                unusable after.
            LocalProtocolError: Called after completion or failure (or, for the client, before
                `initiate`).
        """
        if self._stage is not _Stage.FIRST and self._stage is not _Stage.SECOND:
            raise LocalProtocolError(f"receive_data() in handshake stage {self._stage.name}")
        try:
            self._feed(data)
        except HandshakeError:
            self._stage = _Stage.FAILED
            raise

    def _feed(self, data: bytes) -> None:
        if not data:
            raise HandshakeError(f"peer closed the connection after {self._received} handshake bytes")
        self._received += len(data)
        buf = self._buf
        pos = 0
        end = len(data)
        while pos < end:
            want = 1 + HANDSHAKE_SIZE if self._stage is _Stage.FIRST else HANDSHAKE_SIZE
            take = min(want - len(buf), end - pos)
            buf += data[pos : pos + take]
            pos += take
            if self._stage is _Stage.FIRST and buf[0] != RTMP_VERSION:
                note = " (RTMPE, encrypted RTMP, is not supported)" if buf[0] in (6, 8, 9) else ""
                raise HandshakeError(
                    f"{self._peer} sent RTMP version {buf[0]}{note}; only {RTMP_VERSION} is supported"
                )
            if len(buf) < want:
                return
            if self._stage is _Stage.FIRST:
                packet = bytes(buf[1:])
                buf.clear()
                self._stage = _Stage.SECOND
                self.peer_version = (packet[4], packet[5], packet[6], packet[7])
                self._first_packet(packet)
            else:
                buf.clear()
                self._stage = _Stage.DONE
                self._leftover = bytes(data[pos:])
                return

    @abc.abstractmethod
    def _first_packet(self, packet: bytes) -> None:
        """Answer the peer's C1 (server) or S1 (client)."""


# -- server -----------------------------------------------------------------------------------------


class ServerHandshake(_Handshake):
    """The server side: read C0+C1, answer S0+S1+S2 at once, read C2.

    Args:
        rng: Source of random bytes for S1/S2.
        epoch_ms: Our uptime in ms, for S1's time field (wraps at 32 bits).

    Attributes:
        peer_version: Bytes 4-7 of C1 (the client's Flash Player/library version; zeros for a plain
            client), once C1 has arrived.
        digest_used: True when C1 carried a valid digest and we answered with the digest scheme.
    """

    _peer = "client"

    def __init__(self, *, rng: Callable[[int], bytes] = os.urandom, epoch_ms: int = 0) -> None:
        super().__init__(rng, epoch_ms)

    def _first_packet(self, c1: bytes) -> None:
        found = _find_digest(c1, _FP_KEY_SHORT) if c1[4:8] != _ZERO_VERSION else None
        out = self._out
        out.append(RTMP_VERSION)
        if found is None:
            out += self._time + _ZERO_VERSION + _random(self._rng, _RANDOM_SIZE)
            out += c1
            return
        scheme, client_digest = found
        self.digest_used = True
        out += _signed_packet(self._time + _SERVER_VERSION, self._rng, _FMS_KEY_SHORT, scheme)
        out += _signed_reply(self._rng, client_digest, FMS_KEY)


# -- client -----------------------------------------------------------------------------------------


class ClientHandshake(_Handshake):
    """The client side: `initiate()` queues C0+C1; on S0+S1 we send C2; S2 completes.

    Args:
        rng: Source of random bytes for C1/C2.
        epoch_ms: Our uptime in ms, for C1's time field (wraps at 32 bits).
        digest: Send a digest-signed C1 (scheme 0), as Flash Player and FFmpeg do; False sends the plain
            5.2 packet.

    Attributes:
        peer_version: Bytes 4-7 of S1 (the server's version; zeros for a plain server), once S1 arrived.
        digest_used: True when we sent a digest and S1 carried a valid one, so C2 was signed. A server
            that answers plain (nginx-rtmp does for some clients) gets S1 echoed back instead.
    """

    _peer = "server"

    def __init__(
        self, *, rng: Callable[[int], bytes] = os.urandom, epoch_ms: int = 0, digest: bool = True
    ) -> None:
        super().__init__(rng, epoch_ms)
        self._stage = _Stage.IDLE
        self._digest = digest

    def initiate(self) -> None:
        """Queue C0+C1.

        Raises:
            LocalProtocolError: Called twice.
        """
        if self._stage is not _Stage.IDLE:
            raise LocalProtocolError("initiate() called twice")
        if self._digest:
            c1 = _signed_packet(self._time + _CLIENT_VERSION, self._rng, _FP_KEY_SHORT, 0)
        else:
            c1 = self._time + _ZERO_VERSION + _random(self._rng, _RANDOM_SIZE)
        self._out.append(RTMP_VERSION)
        self._out += c1
        self._stage = _Stage.FIRST

    def _first_packet(self, s1: bytes) -> None:
        found = None
        if self._digest and s1[4:8] != _ZERO_VERSION:
            found = _find_digest(s1, _FMS_KEY_SHORT)
        if found is None:
            self._out += s1
            return
        self.digest_used = True
        self._out += _signed_reply(self._rng, found[1], FP_KEY)
