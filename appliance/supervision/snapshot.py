"""The supervision tree's state, read-only, for the web API, /metrics and the watchdog.

A snapshot copies the supervisors' mutable records into frozen dataclasses synchronously (no
checkpoint), so it is consistent; health, degradation and readiness are derived from it, recursively
through nested supervisors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.supervision.spec import ChildState, Restart

if TYPE_CHECKING:
    from appliance.supervision.child import _Child


@dataclass(frozen=True, kw_only=True, slots=True)
class ChildSnapshot:
    """One child at ``SupervisorSnapshot.taken_at``. Times are trio times or durations in seconds."""

    name: str
    state: ChildState
    critical: bool
    restart: Restart
    ready: bool  # ready in its current run
    ever_ready: bool  # ready at least once since the supervisor started
    restarts: int  # automatic restarts since process start (operator restarts don't count)
    manual_restarts: int = 0  # restart_child calls since process start (an operator's, a config reload's)
    last_restart_requested_at: float | None = None  # trio time of the last of those
    last_error: str | None  # "ValueError: bad frame"
    last_error_trace: tuple[str, ...]  # innermost frames, "path/file.py:12 in func"
    last_error_at: float | None
    uptime_s: float | None  # since it last became ready; None unless running
    next_restart_in_s: float | None  # while in BACKOFF
    down_for_s: float | None  # since it stopped being ready; None while running
    grace_s: float
    ok: bool  # running and ready
    healthy: bool  # for tree health: True for non-critical children; critical: ok or down < grace_s
    degraded: bool  # not running right now (starting, backing off, stopping, failed)
    children: SupervisorSnapshot | None  # a nested supervisor's own snapshot

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, enums as their lowercase values."""
        return {
            "name": self.name,
            "state": self.state.value,
            "critical": self.critical,
            "restart": self.restart.value,
            "ready": self.ready,
            "ever_ready": self.ever_ready,
            "ok": self.ok,
            "healthy": self.healthy,
            "degraded": self.degraded,
            "restarts": self.restarts,
            "manual_restarts": self.manual_restarts,
            "last_restart_requested_at": self.last_restart_requested_at,
            "last_error": self.last_error,
            "last_error_trace": list(self.last_error_trace),
            "last_error_at": self.last_error_at,
            "uptime_s": self.uptime_s,
            "next_restart_in_s": self.next_restart_in_s,
            "down_for_s": self.down_for_s,
            "grace_s": self.grace_s,
            "children": None if self.children is None else self.children.to_dict(),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class SupervisorSnapshot:
    """The tree's state, read-only, for the web API, /metrics and the watchdog."""

    name: str
    strategy: str  # "one_for_one", "rest_for_one" or "dynamic"
    children: tuple[ChildSnapshot, ...]
    taken_at: float
    escalated: str | None  # why the supervisor gave up, while it is down because of that

    @property
    def healthy(self) -> bool:
        """Not escalated, and every critical child (recursively through critical nested supervisors)
        is running and ready or has been down less than its grace. Non-critical subtrees never count."""
        return self.escalated is None and all(c.healthy for c in self.children)

    @property
    def degraded(self) -> bool:
        """Healthy, but some child somewhere (in any subtree) is not running."""
        return self.healthy and self._any_down()

    def _any_down(self) -> bool:
        return any(
            c.degraded or (c.children is not None and (not c.children.healthy or c.children._any_down()))
            for c in self.children
        )

    def failing(self) -> list[str]:
        """Critical children down past their grace, nested names as ``"egress/push:x"``.

        Returns:
            Names for /api/health's 503 body; empty while healthy.
        """
        out: list[str] = []
        for c in self.children:
            if not c.critical or c.healthy:
                continue
            nested = c.children.failing() if c.children is not None and c.ok else []
            if nested:
                out.extend(f"{c.name}/{n}" for n in nested)
            else:
                out.append(c.name)
        return out

    def all_ready(self) -> bool:
        """Every critical child (recursively) became ready at least once: systemd's READY=1."""
        return all(
            c.ever_ready and (c.children is None or c.children.all_ready())
            for c in self.children
            if c.critical
        )

    def walk(self, prefix: str = "") -> Iterator[tuple[str, ChildSnapshot]]:
        """Every child in the tree with its path (``"egress/push:x"``), depth first in start order."""
        for c in self.children:
            path = f"{prefix}{c.name}"
            yield path, c
            if c.children is not None:
                yield from c.children.walk(path + "/")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, with the derived ``healthy``, ``degraded`` and ``failing``."""
        return {
            "name": self.name,
            "strategy": self.strategy,
            "taken_at": self.taken_at,
            "escalated": self.escalated,
            "healthy": self.healthy,
            "degraded": self.degraded,
            "failing": self.failing(),
            "children": [c.to_dict() for c in self.children],
        }


def _child_snapshot(rec: _Child, now: float) -> ChildSnapshot:
    """Copy one child's record, and through ``inspect`` its nested supervisor, at trio time ``now``."""
    spec = rec.spec
    ok = rec.state is ChildState.RUNNING and rec.ready
    down_for = None if ok or rec.down_since is None else max(0.0, now - rec.down_since)
    nested = spec.inspect() if spec.inspect is not None else None
    own_failing = not ok and (
        rec.state is ChildState.FAILED or (down_for is not None and down_for >= spec.grace_s)
    )
    return ChildSnapshot(
        name=spec.name,
        state=rec.state,
        critical=spec.critical,
        restart=spec.restart,
        ready=rec.ready,
        ever_ready=rec.ever_ready,
        restarts=rec.restarts,
        manual_restarts=rec.manual_restarts,
        last_restart_requested_at=rec.last_restart_requested_at,
        last_error=rec.last_error,
        last_error_trace=rec.last_error_trace,
        last_error_at=rec.last_error_at,
        uptime_s=now - rec.ready_at if ok and rec.ready_at is not None else None,
        next_restart_in_s=(
            max(0.0, rec.next_restart_at - now)
            if rec.state is ChildState.BACKOFF and rec.next_restart_at is not None
            else None
        ),
        down_for_s=down_for,
        grace_s=spec.grace_s,
        ok=ok,
        # A nested supervisor that is down is judged by its own grace, not by what it left behind.
        healthy=not spec.critical or ((nested is None or nested.healthy) if ok else not own_failing),
        degraded=rec.state not in (ChildState.RUNNING, ChildState.STOPPED),
        children=nested,
    )
