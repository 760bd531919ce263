"""Helpers the supervision modules share.

Names are bare words so that they need no quoting in ``key=value`` log lines; other log values are
quoted when they are not. An error is described in one line plus the innermost frames of its trace.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from pathlib import PurePath

from appliance.log import quote

_TRACE_FRAMES = 5
_ERROR_CHARS = 400
_BARE = re.compile(r"^[^\s\"=]+$")


def _check_name(kind: str, name: str) -> None:
    # "/" separates nested names in failing(); spaces would need quoting on every log line.
    if not name or "/" in name or not _BARE.match(name):
        raise ValueError(f"{kind} name {name!r}: want a non-empty word without '/', '=', quotes or spaces")


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for sub in error.exceptions:
            yield from _leaves(sub)
    else:
        yield error


def _one_line(error: BaseException) -> str:
    text = str(error)
    return " ".join(f"{type(error).__name__}: {text}".split()) if text else type(error).__name__


def _describe(error: BaseException) -> tuple[str, tuple[str, ...]]:
    """``("ValueError: bad frame", ("media/flv.py:88 in parse", ...))``; a group by its leaves."""
    leaves = list(_leaves(error)) or [error]
    if len(leaves) == 1:
        text = _one_line(leaves[0])
    else:
        text = f"{type(error).__name__}: " + "; ".join(_one_line(e) for e in leaves)
    tb = leaves[0].__traceback__ or error.__traceback__
    frames = traceback.extract_tb(tb)[-_TRACE_FRAMES:] if tb is not None else []
    trace = tuple(f"{'/'.join(PurePath(f.filename).parts[-2:])}:{f.lineno} in {f.name}" for f in frames)
    return text[:_ERROR_CHARS], trace


def _exc(error: BaseException) -> BaseException | None:
    """``exc_info`` for a log call: only errors that were raised have a traceback worth printing."""
    return error if error.__traceback__ is not None else None


_q = quote
