"""What a supervisor is told about its children, and what it reports back in exceptions.

Restart types, strategies and child states (the OTP vocabulary), the exceptions a supervisor raises
or records, the restart :class:`Backoff`, and the frozen :class:`ChildSpec` that describes a child.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.supervision.util import _check_name

if TYPE_CHECKING:
    from appliance.supervision.snapshot import SupervisorSnapshot

# `async def run(*, task_status=trio.TASK_STATUS_IGNORED) -> None`, called as `factory(task_status=...)`.
ChildFactory = Callable[..., Awaitable[object]]


class Restart(enum.Enum):
    """When a child that ended is started again (OTP restart types)."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an exception, not after a normal return
    TEMPORARY = "temporary"  # never


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"  # only the child that ended restarts
    REST_FOR_ONE = "rest_for_one"  # the children started after it restart too, after it is ready again


class ChildState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"  # ready
    BACKOFF = "backoff"  # waiting to restart
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # ended with an error and not restarted (temporary/transient), or given up on


class SupervisorEscalation(Exception):
    """A critical child needed more than ``max_restarts`` restarts within ``window_s``."""

    def __init__(
        self, *, supervisor: str, child: str, restarts: int, window_s: float, max_restarts: int | None = None
    ) -> None:
        limit = "" if max_restarts is None else f" (max {max_restarts})"
        super().__init__(
            f"critical child {child} of {supervisor} needed {restarts} restarts within {window_s:g}s{limit}"
        )
        self.supervisor = supervisor
        self.child = child
        self.restarts = restarts
        self.window_s = window_s
        self.max_restarts = max_restarts


class ChildStartError(Exception):
    """A dynamic child did not become ready; ``error`` (also ``__cause__``) says why, None if stopped."""

    def __init__(self, child: str, error: BaseException | None, reason: str) -> None:
        super().__init__(f"child {child} did not start: {reason}")
        self.child = child
        self.error = error


class ChildLimitError(RuntimeError):
    """A dynamic supervisor already has ``max_children`` children."""


class StartTimeout(Exception):
    """Recorded when a child neither became ready nor failed within ``start_timeout_s``."""


class HeartbeatTimeout(Exception):
    """Recorded when a ready child did not call :func:`heartbeat` within ``heartbeat_s``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Backoff:
    """Delay before automatic restart number ``n`` (from 0): ``min(max_s, initial_s * factor**n)``,
    times a uniform ``1 +/- jitter`` so that children that failed together don't retry together.
    The count ``n`` goes back to 0 once a child has been ready for ``reset_after_s``."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError(
                f"backoff initial_s={self.initial_s!r} max_s={self.max_s!r}: want 0 < initial <= max"
            )
        if self.factor < 1:
            raise ValueError(f"backoff factor={self.factor!r}: want >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff jitter={self.jitter!r}: want 0 <= jitter < 1")
        if self.reset_after_s < 0:
            raise ValueError(f"backoff reset_after_s={self.reset_after_s!r}: want >= 0")

    def base(self, attempt: int) -> float:
        """The delay before jitter for restart number ``attempt`` (0-based)."""
        try:
            return min(self.max_s, self.initial_s * self.factor**attempt)
        except OverflowError:  # float ** int overflows long after the cap was reached
            return self.max_s

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The jittered delay for restart number ``attempt``.

        Args:
            attempt: restarts since the child last ran stably, from 0.
            rng: the source of jitter (a seeded one in tests).

        Returns:
            Seconds, within ``base(attempt) * (1 +/- jitter)``.
        """
        return self.base(attempt) * (1.0 + rng.uniform(-self.jitter, self.jitter))


DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True, kw_only=True, slots=True)
class ChildSpec:
    """What to run and how to treat it when it ends.

    ``factory`` is called as ``factory(task_status=...)`` and must call ``task_status.started()`` once
    it is ready (listening, connected, first frame). ``inspect`` is set for a nested supervisor
    (see :meth:`Supervisor.as_child`) so that snapshots nest.
    """

    name: str
    factory: ChildFactory
    restart: Restart = Restart.PERMANENT
    critical: bool = False
    shutdown_s: float = 5.0
    heartbeat_s: float | None = None
    start_timeout_s: float | None = 30.0
    grace_s: float = 5.0
    inspect: Callable[[], SupervisorSnapshot] | None = None

    def __post_init__(self) -> None:
        _check_name("child", self.name)
        if self.shutdown_s < 0:
            raise ValueError(f"child {self.name}: shutdown_s={self.shutdown_s!r}: want >= 0")
        if self.heartbeat_s is not None and self.heartbeat_s <= 0:
            raise ValueError(f"child {self.name}: heartbeat_s={self.heartbeat_s!r}: want > 0 or None")
        if self.start_timeout_s is not None and self.start_timeout_s <= 0:
            raise ValueError(f"child {self.name}: start_timeout_s={self.start_timeout_s!r}: want > 0 or None")
        if self.grace_s < 0:
            raise ValueError(f"child {self.name}: grace_s={self.grace_s!r}: want >= 0")
