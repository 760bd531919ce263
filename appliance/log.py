"""Structured logging: one line per event, every line naming its subsystem.

Call sites follow STYLE.md: the message is an event name followed by ``key=value`` pairs with lazy
``%`` arguments, e.g. ``log.info("rtmp.publish conn=%s app=%s", cid, app)``. This module renders that
as logfmt on a terminal and as one JSON object per line under journald or with ``log.format = "json"``.

The subsystem is carried in a context variable that the supervisor binds in each child's task, so
trio tasks a child spawns inherit it and no call site has to pass it.
"""

from __future__ import annotations

import ast
import contextvars
import json
import logging
import os
import re
import sys
import time
from typing import IO, Any

__all__ = [
    "SUBSYSTEM",
    "JsonFormatter",
    "LogfmtFormatter",
    "bind_subsystem",
    "parse_event",
    "quote",
    "setup",
]

SUBSYSTEM: contextvars.ContextVar[str] = contextvars.ContextVar("appliance_subsystem", default="main")

# An event name, then key=value pairs; values are bare words, or quoted as by json.dumps or %r.
_PAIR = re.compile(r"""([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\S*)""")
_BARE = re.compile(r"^[^\s\"=]+$")


def bind_subsystem(name: str) -> contextvars.Token[str]:
    """Name the subsystem of the current task (and the tasks it spawns from now on)."""
    return SUBSYSTEM.set(name)


def parse_event(message: str) -> tuple[str, dict[str, str]]:
    """Split ``"event k=v k2=\\"a b\\""`` into the event name and its pairs.

    A message that does not follow the convention comes back whole as the event, so nothing is lost.
    """
    head, _, rest = message.partition(" ")
    if "=" in head or not rest:
        if "=" in head:
            rest, head = message, ""
        else:
            return message, {}
    pairs: dict[str, str] = {}
    pos = 0
    for m in _PAIR.finditer(rest):
        if rest[pos : m.start()].strip():
            return message, {}
        value = m.group(2)
        if value[:1] in ("'", '"'):
            value = _unquote(value)
        pairs[m.group(1)] = value
        pos = m.end()
    if rest[pos:].strip():
        return message, {}
    return head, pairs


def _unquote(value: str) -> str:
    try:
        out = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value[1:-1]
    return out if isinstance(out, str) else value[1:-1]


def quote(value: object) -> str:
    """A log value: bare when it is one word, else JSON-quoted, so the line stays ``key=value``."""
    text = str(value)
    if text and _BARE.match(text):
        return text
    return json.dumps(text)


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _subsystem(record: logging.LogRecord) -> str:
    return str(getattr(record, "subsystem", None) or SUBSYSTEM.get())


class LogfmtFormatter(logging.Formatter):
    """``ts=... level=info subsystem=relay event=rtmp.publish conn=3``."""

    def format(self, record: logging.LogRecord) -> str:
        event, pairs = parse_event(record.getMessage())
        parts = [
            f"ts={_timestamp(record)}",
            f"level={record.levelname.lower()}",
            f"subsystem={quote(_subsystem(record))}",
            f"event={quote(event)}",
        ]
        parts.extend(f"{k}={quote(v)}" for k, v in pairs.items())
        if record.exc_info:
            parts.append(f"exc={quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald and log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        event, pairs = parse_event(record.getMessage())
        doc: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "subsystem": _subsystem(record),
            "event": event,
        }
        for key, value in pairs.items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


def under_journald(stream: IO[str]) -> bool:
    """True when ``stream`` is the journal socket systemd gave us (sd_journal_stream_fd(3) semantics)."""
    spec = os.environ.get("JOURNAL_STREAM")
    if not spec:
        return False
    try:
        dev, ino = (int(x) for x in spec.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup(fmt: str = "auto", level: str = "info", stream: IO[str] | None = None) -> None:
    """Install the appliance's handler on the root logger.

    Args:
        fmt: ``"logfmt"``, ``"json"`` or ``"auto"`` (JSON under journald, logfmt otherwise).
        level: a logging level name.
        stream: where lines go (default stderr).
    """
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "json" if under_journald(out) else "logfmt"
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_appliance", False):
            root.removeHandler(old)
    handler._appliance = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party chatter (hypercorn's access log) stays at warning unless asked for.
    for noisy in ("hypercorn.access", "hypercorn.error"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
