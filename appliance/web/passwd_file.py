"""Writing ``web.password_hash`` into an existing TOML config, keeping everything else byte for byte.

The standard library reads TOML but does not write it, and rewriting the file from parsed data would
lose the operator's comments and layout. So this edits text: the ``password_hash`` line of the
``[web]`` table is replaced, or added under its header, or a ``[web]`` table is appended. The result is
parsed again and must equal the old document with just that one key changed; anything else (a ``[web]``
written as an inline table or dotted keys, a header inside a multi-line string) is refused, to be edited
by hand.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["set_password_hash", "with_password_hash"]

_HEADER = re.compile(r"^\s*\[")
_WEB_HEADER = re.compile(r"^\s*\[\s*web\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*password_hash\s*=")


def with_password_hash(text: str, encoded: str) -> str:
    """``text`` (a TOML document) with ``web.password_hash = encoded``.

    Raises:
        ValueError: ``text`` is not TOML, or its ``[web]`` is written in a way this can't edit safely.
    """
    try:
        before: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"not valid TOML: {e}") from None
    line = f'password_hash = "{encoded}"'
    lines = text.splitlines(keepends=True)
    start = next((i for i, s in enumerate(lines) if _WEB_HEADER.match(s)), None)
    if start is None:
        body = text if not text or text.endswith("\n") else text + "\n"
        out = f"{body}{chr(10) if body else ''}[web]\n{line}\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
        existing = next((i for i in range(start + 1, end) if _KEY.match(lines[i])), None)
        if existing is not None:
            newline = "\n" if lines[existing].endswith("\n") else ""
            lines[existing] = line + newline
        else:
            lines.insert(start + 1, line + "\n")
            if not lines[start].endswith("\n"):
                lines[start] += "\n"
        out = "".join(lines)
    want = dict(before)
    want["web"] = {**before.get("web", {}), "password_hash": encoded}
    try:
        after = tomllib.loads(out)
    except tomllib.TOMLDecodeError:
        after = None
    if after != want:
        raise ValueError('can\'t edit its [web] table safely; add password_hash = "..." under [web] by hand')
    return out


def set_password_hash(path: Path, encoded: str) -> None:
    """Write ``web.password_hash`` into the file at ``path`` (created when missing), atomically, keeping
    its mode.

    Raises:
        OSError: it can't be read or written.
        ValueError: as :func:`with_password_hash`.
    """
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        text, mode = "", 0o640
    out = with_password_hash(text, encoded)
    tmp = path.with_name(f".{path.name}.passwd.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(out)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
