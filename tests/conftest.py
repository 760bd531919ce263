"""Test-wide settings: hypothesis profiles.

- default: hypothesis's own randomness, no deadlines (a loaded 2-core box must not fail on slowness);
- ci (APPLIANCE_REQUIRE_PEERS=1): also derandomized, so a CI run is repeatable;
- property tests scale their example counts by APPLIANCE_FUZZ_SCALE (tests/fuzz.py); `make test-slow` runs
  them with a large scale (tests/slow/test_long_fuzz.py).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("APPLIANCE_REQUIRE_PEERS") == "1" else "default")


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET, and its path."""
    # AF_UNIX paths are limited to 108 bytes: keep it short rather than under pytest's deep tmp_path.
    d = tempfile.mkdtemp(prefix="ntf", dir="/tmp")
    path = f"{d}/notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield sock, path
    sock.close()
    Path(path).unlink(missing_ok=True)
    Path(d).rmdir()
