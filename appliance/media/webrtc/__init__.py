"""WebRTC egress (WHEP) on aiortc, the `webrtc` extra. The only package where asyncio appears: aiortc runs
on one asyncio loop thread (`loop.py`); everything outside talks to it through the trio side of `whep.py`."""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra() -> str | None:
    """Why WebRTC cannot run here ("disabled: extra not installed"), or None when aiortc imports."""
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return "disabled: extra not installed"
    return None
