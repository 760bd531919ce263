"""Test-wide settings: hypothesis profiles.

- default: hypothesis's own randomness, no deadlines (a loaded 2-core box must not fail on slowness);
- ci (APPLIANCE_REQUIRE_PEERS=1): also derandomized, so a CI run is repeatable;
- property tests scale their example counts by APPLIANCE_FUZZ_SCALE (tests/fuzz.py); `make test-slow` runs
  them with a large scale (tests/slow/test_long_fuzz.py).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("APPLIANCE_REQUIRE_PEERS") == "1" else "default")
