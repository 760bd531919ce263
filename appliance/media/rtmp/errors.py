"""Errors of the RTMP cores.

`RemoteProtocolError` means the peer broke the protocol: the driver closes that one connection and logs
the message (which names what was wrong and where). `LocalProtocolError` means our own code misused a core.
"""

from __future__ import annotations

__all__ = ["LocalProtocolError", "RemoteProtocolError", "RtmpProtocolError"]


class RtmpProtocolError(Exception):
    """Base of the RTMP cores' protocol errors.

    Args:
        message: What went wrong, for the log.
        offset: Byte offset in the peer's stream where it was detected, when known.
    """

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


class RemoteProtocolError(RtmpProtocolError):
    """The peer sent something the protocol (or our limits) does not allow."""


class LocalProtocolError(RtmpProtocolError):
    """Our own side asked a core for something the protocol does not allow in its state."""
