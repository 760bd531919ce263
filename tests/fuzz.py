"""How hard property tests look: ``examples(n)`` is n, times APPLIANCE_FUZZ_SCALE (default 1)."""

from __future__ import annotations

import os

SCALE = max(1, int(os.environ.get("APPLIANCE_FUZZ_SCALE", "1")))


def examples(n: int) -> int:
    return n * SCALE
