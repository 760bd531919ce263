"""Finding the real peers tests talk to. A missing peer skips locally and FAILS in CI.

CI sets APPLIANCE_REQUIRE_PEERS=1 after scripts/install-test-deps has installed every peer, so a peer
that is missing there is a broken install, not a reason to pass quietly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

__all__ = ["BROWSER_DIR", "peers_required", "require_browser_scripts", "require_command"]


def peers_required() -> bool:
    return os.environ.get("APPLIANCE_REQUIRE_PEERS") == "1"


def require_command(name: str) -> str:
    """Path of executable ``name``; skip the test (fail under APPLIANCE_REQUIRE_PEERS=1) when absent."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"peer {name!r} is not installed (scripts/install-test-deps installs it)"
    if peers_required():
        pytest.fail(msg + " and APPLIANCE_REQUIRE_PEERS=1")
    pytest.skip(msg)  # only when APPLIANCE_REQUIRE_PEERS is unset: checked just above


BROWSER_DIR = Path(__file__).resolve().parent / "browser"


def require_browser_scripts() -> Path:
    """tests/browser with its npm packages (playwright-core), Node.js and Debian's Chromium; fails under
    APPLIANCE_REQUIRE_PEERS=1 (skips otherwise) when any is missing."""
    require_command("node")
    require_command("chromium")
    if not (BROWSER_DIR / "node_modules" / "playwright-core" / "package.json").exists():
        msg = f"{BROWSER_DIR}/node_modules is missing (scripts/install-test-deps runs npm ci there)"
        if peers_required():
            pytest.fail(msg + " and APPLIANCE_REQUIRE_PEERS=1")
        pytest.skip(msg)  # only when APPLIANCE_REQUIRE_PEERS is unset: checked just above
    return BROWSER_DIR
