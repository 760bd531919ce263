"""Supervision tree for trio, modelled on Erlang/OTP supervisors (DESIGN.md section 3).

Theory of operation
-------------------
A supervisor owns one nursery. Each child runs in a *runner* task inside its own **shielded** cancel
scope, so nothing but the supervisor's explicit stop reaches it: neither a sibling's crash nor the
cancellation of whoever called ``run()``. On shutdown the supervisor therefore gets to cancel runners
one at a time, in reverse start order, each within its ``shutdown_s``.

A runner loops over *attempts*. An attempt is one call of the child's factory in a small nursery next
to a watcher task that enforces ``start_timeout_s`` and ``heartbeat_s``. The factory gets a task status
of ours, so ``task_status.started()`` marks the child ready without moving it between nurseries. When
an attempt ends, the runner records why (exception, short traceback), applies the restart policy,
counts the restart in the child's intensity window (R restarts in T seconds, per child) and sleeps a
jittered exponential backoff. A critical child past intensity makes the supervisor *escalate*: stop
everything and raise :class:`SupervisorEscalation` to its parent. A non-critical child past intensity
keeps restarting at the backoff cap and shows as degraded; it never takes the process down. Unlike
OTP, intensity is counted per child, so that a flapping camera can't spend the relay's budget.

rest_for_one: when a child restarts, the running siblings after it are stopped (last first) and *held*
by it; once it is ready again its watcher starts them in order, each after the previous one settled.
Temporary siblings stopped this way stay stopped, as in OTP.

Stopping cancels the runner's scope. Trio can't kill a task that ignores that, so a child that overruns
its ``shutdown_s`` is logged (``child.stop_slow``) and, on shutdown, waited for after the others.

Callers never await a runner itself but events it sets (``settled``: ready or its first attempt over;
``done``: task exited). Operations that stop and start (``restart_child``) run as helper tasks in the
supervisor's nursery, so a cancelled caller can't leave a child half restarted.

State is kept in plain mutable records that only the supervisor's tasks write; :meth:`snapshot`
copies them into frozen dataclasses synchronously (no checkpoint), so a snapshot is consistent.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import json
import logging
import random
import re
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import trio

from appliance.log import SUBSYSTEM, bind_subsystem

__all__ = [
    "DEFAULT_BACKOFF",
    "Backoff",
    "ChildFactory",
    "ChildLimitError",
    "ChildSnapshot",
    "ChildSpec",
    "ChildStartError",
    "ChildState",
    "DynamicSupervisor",
    "HeartbeatTimeout",
    "Restart",
    "StartTimeout",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorSnapshot",
    "current_child_name",
    "heartbeat",
]

log = logging.getLogger("appliance.supervisor")

# `async def run(*, task_status=trio.TASK_STATUS_IGNORED) -> None`, called as `factory(task_status=...)`.
ChildFactory = Callable[..., Awaitable[object]]

_TRACE_FRAMES = 5
_ERROR_CHARS = 400
_BARE = re.compile(r"^[^\s\"=]+$")


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


def _own_failing(c: ChildSnapshot) -> bool:
    return not c.ok and (
        c.state is ChildState.FAILED or (c.down_for_s is not None and c.down_for_s >= c.grace_s)
    )


# ---------------------------------------------------------------------------------------------------
# Heartbeats and the child's context.


class _Attempt(trio.TaskStatus[Any]):
    """One run of a child's factory: its task status, readiness, heartbeat and outcome."""

    def __init__(self, rec: _Child, run: _Run) -> None:
        self.rec = rec
        self.run = run
        self.spec = rec.spec
        self.ready = False
        self.ready_event = trio.Event()
        self.closed = False
        self.error: BaseException | None = None
        self.begun_at = trio.current_time()
        self.last_beat = self.begun_at
        self.scope: trio.CancelScope | None = None  # the attempt's own, cancelled by the watcher

    def started(self, value: object = None) -> None:
        if self.ready:
            raise RuntimeError("called 'started' twice on the same task status")
        # A child that reports ready while being stopped (or after its attempt ended) is not.
        if (
            self.closed
            or self.run.scope.cancel_called
            or (self.scope is not None and self.scope.cancel_called)
        ):
            return
        now = trio.current_time()
        self.ready = True
        self.last_beat = now
        rec = self.rec
        rec.ready = rec.ever_ready = True
        rec.ready_at = now
        rec.down_since = None
        rec.state = ChildState.RUNNING
        self.run.settled.set()
        self.ready_event.set()
        log.info("child.ready child=%s startup_s=%.3f", self.spec.name, now - self.begun_at)

    def fail(self, error: BaseException) -> None:
        # The first reason wins: a child cancelled for a missed heartbeat may raise anything unwinding.
        if self.error is None:
            self.error = error

    def beat(self) -> None:
        if not self.closed:
            self.last_beat = trio.current_time()


_CURRENT: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar("appliance_child", default=None)


def heartbeat() -> None:
    """Tell the supervisor the calling child is alive. No-op outside a supervised child.

    Works from the child's task, tasks it spawned, and worker threads started with
    ``trio.to_thread.run_sync`` (they inherit the child's context).
    """
    attempt = _CURRENT.get()
    if attempt is None:
        return
    try:
        attempt.beat()
    except RuntimeError:  # not on the trio thread: hop over (worker threads keep a trio token)
        with contextlib.suppress(RuntimeError):  # a thread trio doesn't know: nothing to tell
            trio.from_thread.run_sync(attempt.beat)


def current_child_name() -> str | None:
    """The name of the innermost supervised child the calling task belongs to, or None."""
    attempt = _CURRENT.get()
    return None if attempt is None else attempt.spec.name


# ---------------------------------------------------------------------------------------------------
# Mutable per-child state, written only by the supervisor's tasks.


@dataclass(eq=False, slots=True)
class _Run:
    """One launch of a child: a runner task, its scope, and the events callers wait on."""

    fail_fast: bool  # the first attempt failing ends the run (dynamic start_child)
    scope: trio.CancelScope = field(default_factory=lambda: trio.CancelScope(shield=True))
    settled: trio.Event = field(default_factory=trio.Event)  # ready, first attempt over, or stopped
    done: trio.Event = field(default_factory=trio.Event)  # the runner task exited
    start_error: BaseException | None = None
    stop_requested_at: float | None = None
    stopped_early: bool = False  # stopped before it settled


@dataclass(eq=False, slots=True)
class _Child:
    spec: ChildSpec
    state: ChildState = ChildState.STOPPED
    run: _Run | None = None
    ready: bool = False
    ever_ready: bool = False
    ready_at: float | None = None
    down_since: float | None = None
    restarts: int = 0
    attempts: int = 0  # the backoff exponent
    window: deque[float] = field(default_factory=deque)  # automatic restarts within max_seconds
    over_intensity: bool = False
    last_error: str | None = None
    last_error_trace: tuple[str, ...] = ()
    last_error_at: float | None = None
    next_restart_at: float | None = None
    held_by: _Child | None = None  # rest_for_one: stopped until this earlier sibling is ready
    removing: bool = False  # dynamic: stop_child asked for removal

    def alive(self) -> bool:
        return self.run is not None and not self.run.done.is_set()


# ---------------------------------------------------------------------------------------------------
# The machinery both supervisors share.


class _Tree:
    _strategy_name = "one_for_one"

    def __init__(
        self,
        name: str,
        *,
        strategy: Strategy,
        max_restarts: int,
        max_seconds: float,
        backoff: Backoff,
        rng: random.Random | None,
    ) -> None:
        _check_name("supervisor", name)
        if max_restarts < 0:
            raise ValueError(f"supervisor {name}: max_restarts={max_restarts!r}: want >= 0")
        if max_seconds <= 0:
            raise ValueError(f"supervisor {name}: max_seconds={max_seconds!r}: want > 0")
        self.name = name
        self._strategy = strategy
        self._max_restarts = max_restarts
        self._max_seconds = max_seconds
        self._backoff = backoff
        self._rng = rng if rng is not None else random.Random()
        self._children: dict[str, _Child] = {}  # insertion order is start order
        self._nursery: trio.Nursery | None = None
        self._main_scope: trio.CancelScope | None = None
        self._helpers: set[trio.CancelScope] = set()
        self._ops: trio.Lock | None = None
        self._stopping = False
        self._escalation: SupervisorEscalation | None = None
        self._log_subsystem = SUBSYSTEM.get()
        self._parent_attempt: _Attempt | None = None
        self._last_now = 0.0

    @property
    def running(self) -> bool:
        return self._nursery is not None and not self._stopping

    @property
    def names(self) -> tuple[str, ...]:
        """Child names in start order."""
        return tuple(self._children)

    @property
    def specs(self) -> tuple[ChildSpec, ...]:
        """Current child specs in start order (``restart_child`` may have replaced some)."""
        return tuple(rec.spec for rec in self._children.values())

    def as_child(
        self,
        *,
        name: str | None = None,
        critical: bool = False,
        restart: Restart = Restart.PERMANENT,
        shutdown_s: float = 10.0,
        start_timeout_s: float | None = None,
        grace_s: float = 5.0,
    ) -> ChildSpec:
        """A spec that runs this supervisor as a child of another, its snapshot nested in the parent's.

        ``start_timeout_s`` defaults to None: each of our children's starts is bounded already.
        """
        return ChildSpec(
            name=name or self.name,
            factory=self.run,
            restart=restart,
            critical=critical,
            shutdown_s=shutdown_s,
            start_timeout_s=start_timeout_s,
            grace_s=grace_s,
            inspect=self.snapshot,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, each once the previous one is ready (or failed its first
        attempt, or timed out starting), then supervise them until cancelled.

        On cancellation every child is stopped in reverse start order, each within its ``shutdown_s``;
        this returns only after every child task has exited.

        Raises:
            SupervisorEscalation: a critical child exceeded the restart intensity; every child has been
                stopped by the time it is raised.
            RuntimeError: already running.
        """
        await self._serve(task_status)

    async def _start(self) -> None:
        for rec in list(self._children.values()):
            if self._escalation is not None:
                return
            if rec.held_by is not None:  # rest_for_one: an earlier sibling will start it
                continue
            run = self._launch(rec)
            if run is None:
                return
            await run.settled.wait()

    async def restart_child(self, name: str, spec: ChildSpec | None = None) -> None:
        """Stop a child (rest_for_one: and the ones after it) and start it again, maybe with a new spec.

        An operator's request (web API, config reload): it does not count towards the intensity and
        resets the child's backoff. Waits until the child is ready or failed its first attempt, and
        runs to completion even if the caller is cancelled.

        Args:
            name: the child.
            spec: its replacement (same name), or None to restart the current one.

        Raises:
            KeyError: no such child.
            ValueError: ``spec.name`` differs from ``name``.
            RuntimeError: the supervisor is not running.
        """
        rec = self._children[name]
        if spec is not None and spec.name != name:
            raise ValueError(f"restart_child({name!r}): spec is named {spec.name!r}")
        await self._in_helper(lambda: self._restart(rec, spec))

    async def _restart(self, rec: _Child, spec: ChildSpec | None) -> None:
        assert self._ops is not None
        async with self._ops:  # one operator restart at a time
            log.info("child.restart_requested child=%s new_spec=%s", rec.spec.name, spec is not None)
            rest_for_one = self._strategy is Strategy.REST_FOR_ONE
            if rest_for_one:
                await self._hold_later(rec)
            await self._stop(rec, reason="restart requested", patient=True)
            if self._children.get(rec.spec.name) is not rec:  # a dynamic child removed meanwhile
                return
            if spec is not None:
                rec.spec = spec
            rec.attempts = 0
            run = self._launch(rec)
            if run is None:
                return
            await run.settled.wait()
            if rest_for_one and rec.ready:
                await self._relaunch_held(rec)

    def _runner_exited(self, rec: _Child, ended: bool) -> None:
        """Hook: a runner task exited; ``ended`` if the child ended for good rather than being stopped."""

    def _on_exit(self) -> None:
        """Hook: the supervisor has stopped every child."""

    # -- snapshot ----------------------------------------------------------------------------------

    def snapshot(self) -> SupervisorSnapshot:
        """The current state of this supervisor and, through ``inspect``, its nested ones.

        Returns:
            A frozen snapshot; cheap, callable from any trio task.
        """
        now = self._now()
        return SupervisorSnapshot(
            name=self.name,
            strategy=self._strategy_name,
            children=tuple(self._child_snapshot(rec, now) for rec in self._children.values()),
            taken_at=now,
            escalated=None if self._escalation is None else str(self._escalation),
        )

    def _child_snapshot(self, rec: _Child, now: float) -> ChildSnapshot:
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

    def _now(self) -> float:
        # Outside trio.run (a test's teardown, a thread) the last time we knew will do.
        with contextlib.suppress(RuntimeError):
            self._last_now = trio.current_time()
        return self._last_now

    # -- run and stop ------------------------------------------------------------------------------

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name} is already running")
        # A parent may run us again after we escalated: start with clean intensity and backoff.
        self._escalation = None
        self._stopping = False
        self._ops = trio.Lock()
        self._log_subsystem = SUBSYSTEM.get()
        self._parent_attempt = _CURRENT.get()
        for rec in self._children.values():
            rec.window.clear()
            rec.attempts = 0
            rec.over_intensity = False
            rec.held_by = None
        log.info(
            "supervisor.starting supervisor=%s strategy=%s children=%d",
            self.name,
            self._strategy_name,
            len(self._children),
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    with trio.CancelScope() as self._main_scope:
                        await self._start()
                        if self._escalation is None:
                            log.info("supervisor.started supervisor=%s", self.name)
                            task_status.started()
                        await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._stop_all()
        finally:
            self._nursery = None
            self._main_scope = None
            self._on_exit()
            log.info("supervisor.stopped supervisor=%s escalated=%s", self.name, self._escalation is not None)
        if self._escalation is not None:
            raise self._escalation

    async def _stop_all(self) -> None:
        """Stop every child in reverse start order; a slow one is logged and waited for at the end."""
        self._stopping = True
        log.info("supervisor.stopping supervisor=%s", self.name)
        for scope in list(self._helpers):
            scope.cancel()
        for rec in reversed(list(self._children.values())):
            rec.held_by = None
            if rec.alive():
                await self._stop(rec, reason="shutdown", patient=False)
            elif rec.state is ChildState.BACKOFF:  # held by rest_for_one: never relaunched now
                rec.state = ChildState.STOPPED
        for rec in self._children.values():  # nothing should be left; belt and braces
            if rec.run is not None:
                rec.run.scope.cancel()

    async def _stop(self, rec: _Child, *, reason: str, patient: bool) -> None:
        run = rec.run
        if run is None or run.done.is_set():
            return
        if run.stop_requested_at is None:
            run.stop_requested_at = trio.current_time()
            if rec.state is not ChildState.FAILED:
                rec.state = ChildState.STOPPING
            log.info("child.stopping child=%s reason=%s", rec.spec.name, _q(reason))
            run.scope.cancel()
        with trio.move_on_after(rec.spec.shutdown_s):
            await run.done.wait()
        if run.done.is_set():
            return
        log.error("child.stop_slow child=%s shutdown_s=%.2f", rec.spec.name, rec.spec.shutdown_s)
        if patient:  # the next instance must not overlap this one (ports, devices)
            await run.done.wait()

    # -- launching ---------------------------------------------------------------------------------

    def _bind_context(self) -> None:
        # Tasks we spawn on behalf of a caller (restart_child from a web request) must not log under,
        # or heartbeat for, the caller's subsystem.
        SUBSYSTEM.set(self._log_subsystem)
        _CURRENT.set(self._parent_attempt)

    def _launch(self, rec: _Child, *, fail_fast: bool = False) -> _Run | None:
        """Start a runner for ``rec`` unless one is alive (then return it) or we are stopping (None)."""
        if rec.alive():
            return rec.run
        if self._stopping or self._nursery is None:
            return None
        run = _Run(fail_fast=fail_fast)
        rec.run = run
        rec.held_by = None
        rec.state = ChildState.STARTING
        rec.next_restart_at = None
        if rec.down_since is None:
            rec.down_since = trio.current_time()
        self._nursery.start_soon(self._runner, rec, run, name=f"{self.name}/{rec.spec.name}")
        return run

    async def _helper(self, fn: Callable[[], Awaitable[None]], done: trio.Event) -> None:
        self._bind_context()
        scope = trio.CancelScope()
        self._helpers.add(scope)
        try:
            with scope:
                await fn()
        finally:
            self._helpers.discard(scope)
            done.set()

    async def _in_helper(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` as a task of ours and wait for it; the caller's cancellation does not stop it."""
        if self._nursery is None or self._stopping:
            raise RuntimeError(f"supervisor {self.name} is not running")
        done = trio.Event()
        self._nursery.start_soon(self._helper, fn, done)
        await done.wait()

    # -- one child ---------------------------------------------------------------------------------

    async def _runner(self, rec: _Child, run: _Run) -> None:
        self._bind_context()
        ended = False
        try:
            with run.scope:
                if not run.scope.cancel_called:
                    ended = await self._supervise(rec, run)
        finally:
            now = self._now()
            rec.ready = False
            if rec.down_since is None:
                rec.down_since = now
            if not ended:
                run.stopped_early = not run.settled.is_set()
                if rec.state is not ChildState.FAILED:
                    rec.state = ChildState.BACKOFF if rec.held_by is not None else ChildState.STOPPED
                rec.next_restart_at = None
                took = 0.0 if run.stop_requested_at is None else now - run.stop_requested_at
                log.info("child.stopped child=%s took_s=%.3f", rec.spec.name, took)
            run.settled.set()
            run.done.set()
            self._runner_exited(rec, ended)

    async def _supervise(self, rec: _Child, run: _Run) -> bool:
        """Run attempts until the child ends for good (True) or the supervisor gives up on it (False)."""
        first = True
        while True:
            error = await self._attempt(rec, run)
            now = trio.current_time()
            ran_s = now - rec.ready_at if rec.ready and rec.ready_at is not None else None
            rec.ready = False
            if rec.down_since is None:  # down since it was last ready, however many attempts since
                rec.down_since = now
            spec = rec.spec
            if error is not None:
                self._record(rec, error)
            if first and run.fail_fast and ran_s is None and error is not None:
                run.start_error = error
                rec.state = ChildState.FAILED
                log.warning(
                    "child.start_failed child=%s error=%s",
                    spec.name,
                    _q(rec.last_error),
                    exc_info=_exc(error),
                )
                return True
            first = False
            run.settled.set()
            if self._stopping or self._escalation is not None:
                # The shutdown will cancel us in turn: don't restart, or escalate twice, meanwhile.
                await trio.sleep_forever()
            if not (
                spec.restart is Restart.PERMANENT or (spec.restart is Restart.TRANSIENT and error is not None)
            ):
                if error is None:
                    rec.state = ChildState.STOPPED
                    log.info("child.exited child=%s restart=%s", spec.name, spec.restart.value)
                else:
                    rec.state = ChildState.FAILED
                    log.error(
                        "child.failed child=%s restart=%s error=%s",
                        spec.name,
                        spec.restart.value,
                        _q(rec.last_error),
                        exc_info=_exc(error),
                    )
                return True
            if ran_s is not None and ran_s >= self._backoff.reset_after_s:
                rec.attempts = 0
            rec.window.append(now)
            while rec.window and rec.window[0] <= now - self._max_seconds:
                rec.window.popleft()
            if len(rec.window) > self._max_restarts:
                if spec.critical:
                    rec.state = ChildState.FAILED
                    self._escalate(rec, error)
                    return False
                if not rec.over_intensity:
                    log.warning(
                        "child.over_intensity child=%s restarts=%d window_s=%g backoff_s=%g",
                        spec.name,
                        len(rec.window),
                        self._max_seconds,
                        self._backoff.max_s,
                    )
                rec.over_intensity = True
                delay = self._backoff.max_s * (
                    1.0 + self._rng.uniform(-self._backoff.jitter, self._backoff.jitter)
                )
            else:
                rec.over_intensity = False
                delay = self._backoff.delay(rec.attempts, self._rng)
            rec.attempts += 1
            rec.state = ChildState.BACKOFF
            rec.next_restart_at = now + delay
            if error is None:
                log.warning(
                    "child.exited child=%s restarts=%d backoff_s=%.2f", spec.name, rec.restarts, delay
                )
            else:
                log.warning(
                    "child.crashed child=%s restarts=%d backoff_s=%.2f error=%s",
                    spec.name,
                    rec.restarts,
                    delay,
                    _q(rec.last_error),
                    exc_info=_exc(error),
                )
            if self._strategy is Strategy.REST_FOR_ONE:
                await self._hold_later(rec)
            await trio.sleep_until(rec.next_restart_at)
            rec.restarts += 1
            rec.next_restart_at = None
            rec.state = ChildState.STARTING
            log.info("child.restarting child=%s restarts=%d", spec.name, rec.restarts)

    def _escalate(self, rec: _Child, error: BaseException | None) -> None:
        if self._escalation is not None:
            return
        esc = SupervisorEscalation(
            supervisor=self.name,
            child=rec.spec.name,
            restarts=len(rec.window),
            window_s=self._max_seconds,
            max_restarts=self._max_restarts,
        )
        esc.__cause__ = error
        self._escalation = esc
        log.error(
            "supervisor.escalated supervisor=%s child=%s restarts=%d window_s=%g error=%s",
            self.name,
            rec.spec.name,
            len(rec.window),
            self._max_seconds,
            _q(rec.last_error or "returned"),
        )
        if self._main_scope is not None:
            self._main_scope.cancel()

    async def _attempt(self, rec: _Child, run: _Run) -> BaseException | None:
        """Run the factory once. Returns what it raised (or why we cancelled it), None if it returned."""
        attempt = _Attempt(rec, run)
        try:
            async with trio.open_nursery() as nursery:
                attempt.scope = nursery.cancel_scope
                nursery.start_soon(self._child_task, attempt, nursery.cancel_scope, name=rec.spec.name)
                nursery.start_soon(self._watch, attempt, nursery, name=f"{rec.spec.name}:watch")
        except BaseException:
            if attempt.error is not None:  # it failed while being stopped: worth knowing, not raising
                self._record(rec, attempt.error)
                log.warning("child.stop_failed child=%s error=%s", rec.spec.name, _q(rec.last_error))
            raise
        finally:
            attempt.closed = True
        return attempt.error

    def _record(self, rec: _Child, error: BaseException) -> None:
        rec.last_error, rec.last_error_trace = _describe(error)
        rec.last_error_at = trio.current_time()

    async def _child_task(self, attempt: _Attempt, scope: trio.CancelScope) -> None:
        bind_subsystem(attempt.spec.name)  # every line the child logs carries its name
        _CURRENT.set(attempt)
        try:
            await attempt.spec.factory(task_status=attempt)
        except Exception as exc:  # the supervisor's one catch-all: a child's failure is data here
            attempt.fail(exc)
        except BaseExceptionGroup as group:
            # The child's own nursery failed while we were cancelling it: keep its errors, let the
            # Cancelled (and KeyboardInterrupt & co) propagate to the scopes they belong to.
            errors, rest = group.split(Exception)
            if errors is not None:
                attempt.fail(errors)
            if rest is not None:
                raise rest from None
        finally:
            scope.cancel()  # the attempt is over: stop the watcher

    async def _watch(self, attempt: _Attempt, nursery: trio.Nursery) -> None:
        spec = attempt.spec
        if spec.start_timeout_s is None:
            await attempt.ready_event.wait()
        else:
            with trio.move_on_after(spec.start_timeout_s):
                await attempt.ready_event.wait()
            if not attempt.ready:
                attempt.fail(StartTimeout(f"start timeout: not ready within {spec.start_timeout_s:g}s"))
                log.error("child.start_timeout child=%s start_timeout_s=%g", spec.name, spec.start_timeout_s)
                nursery.cancel_scope.cancel()
                return
        if any(c.held_by is attempt.rec for c in self._children.values()):
            nursery.start_soon(self._relaunch_held, attempt.rec)
        if spec.heartbeat_s is None:
            return
        while True:
            deadline = attempt.last_beat + spec.heartbeat_s
            if trio.current_time() >= deadline:
                attempt.fail(HeartbeatTimeout(f"heartbeat timeout: none for {spec.heartbeat_s:g}s"))
                log.error("child.heartbeat_timeout child=%s heartbeat_s=%g", spec.name, spec.heartbeat_s)
                nursery.cancel_scope.cancel()
                return
            await trio.sleep_until(deadline)

    # -- rest_for_one ------------------------------------------------------------------------------

    def _later(self, rec: _Child) -> list[_Child]:
        recs = list(self._children.values())
        return recs[recs.index(rec) + 1 :] if rec in recs else []

    async def _hold_later(self, owner: _Child) -> None:
        """Stop the siblings started after ``owner`` until it is ready again (OTP rest_for_one)."""
        recs = list(self._children.values())
        later = self._later(owner)
        for rec in later:
            # Temporary children are never restarted, not even by a sibling's restart (as in OTP).
            if rec.spec.restart is Restart.TEMPORARY or not (rec.alive() or rec.held_by is not None):
                continue
            # The earliest owner relaunches: it restarts the later owners too, which then find theirs.
            if rec.held_by is None or recs.index(owner) < recs.index(rec.held_by):
                rec.held_by = owner
        for rec in reversed(later):
            if rec.alive():
                await self._stop(rec, reason=f"rest_for_one after {owner.spec.name}", patient=True)

    async def _relaunch_held(self, owner: _Child) -> None:
        """Start, in order and each once the previous one settled, the siblings ``owner`` held."""
        for rec in self._later(owner):
            if rec.held_by is owner:
                if rec.run is not None and not rec.run.done.is_set():
                    await rec.run.done.wait()  # a slow stop still in progress
                if rec.held_by is owner and self._launch(rec) is None:
                    return
            if rec.run is not None:
                await rec.run.settled.wait()


class Supervisor(_Tree):
    """A static supervisor: a fixed list of children, one_for_one or rest_for_one."""

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 5,
        max_seconds: float = 60.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        """A supervisor of a fixed list of children.

        Args:
            name: the supervisor's name (a child name when nested).
            children: specs in start order; names unique.
            strategy: what restarts when a child ends.
            max_restarts: restarts a child may need within ``max_seconds``; one more and a critical
                child escalates, a non-critical one restarts at ``backoff.max_s``.
            max_seconds: the intensity window.
            backoff: delays between restarts.
            rng: jitter source (seeded in tests).

        Raises:
            ValueError: duplicate or malformed names, bad limits.
        """
        super().__init__(
            name,
            strategy=strategy,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            backoff=backoff,
            rng=rng,
        )
        self._strategy_name = strategy.value
        for spec in children:
            if spec.name in self._children:
                raise ValueError(f"supervisor {name}: duplicate child name {spec.name!r}")
            self._children[spec.name] = _Child(spec)


class DynamicSupervisor(_Tree):
    """Children started and stopped at run time (OTP simple_one_for_one): push targets, cloud streams.

    Each child is one_for_one. A temporary child that ends, a transient one that returns, any child
    whose first start fails, and any child ``stop_child`` stops, is removed. Permanent and transient
    children outlive a restart of this supervisor by its parent: they start again when ``run`` does.
    """

    _strategy_name = "dynamic"

    def __init__(
        self,
        name: str,
        *,
        max_restarts: int = 5,
        max_seconds: float = 60.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: random.Random | None = None,
        max_children: int | None = None,
    ) -> None:
        """A supervisor with no children until ``start_child``.

        Args:
            name, max_restarts, max_seconds, backoff, rng: as for :class:`Supervisor`.
            max_children: a bound on live children (None: unlimited).

        Raises:
            ValueError: malformed name, bad limits.
        """
        super().__init__(
            name,
            strategy=Strategy.ONE_FOR_ONE,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            backoff=backoff,
            rng=rng,
        )
        if max_children is not None and max_children < 0:
            raise ValueError(f"supervisor {name}: max_children={max_children!r}: want >= 0 or None")
        self._max_children = max_children

    def has_child(self, name: str) -> bool:
        return name in self._children

    async def start_child(self, spec: ChildSpec) -> None:
        """Add a child and wait until it is ready.

        If the caller is cancelled while waiting, the child carries on.

        Args:
            spec: the child; its name must be unique here.

        Raises:
            ChildStartError: its first attempt failed or timed out (the child is removed), or it was
                stopped before it became ready.
            ValueError: a child of that name exists.
            ChildLimitError: ``max_children`` reached.
            RuntimeError: the supervisor is not running.
        """
        if self._nursery is None or self._stopping:
            raise RuntimeError(f"supervisor {self.name} is not running")
        if spec.name in self._children:
            raise ValueError(f"supervisor {self.name}: a child named {spec.name!r} exists")
        if self._max_children is not None and len(self._children) >= self._max_children:
            raise ChildLimitError(f"supervisor {self.name}: already {len(self._children)} children")
        rec = _Child(spec)
        self._children[spec.name] = rec
        log.info("child.added supervisor=%s child=%s", self.name, spec.name)
        run = self._launch(rec, fail_fast=True)
        assert run is not None  # running and not stopping, checked above with no checkpoint since
        await run.settled.wait()
        if run.start_error is not None:
            raise ChildStartError(spec.name, run.start_error, rec.last_error or "failed") from run.start_error
        if run.stopped_early:
            raise ChildStartError(spec.name, None, "stopped before it was ready")

    async def stop_child(self, name: str) -> None:
        """Stop a child within its ``shutdown_s`` and remove it (waits longer, logging, if it is slow).

        Raises:
            KeyError: no such child.
        """
        rec = self._children[name]
        rec.removing = True
        if rec.alive():
            await self._stop(rec, reason="stop requested", patient=True)
        else:
            self._remove(rec)

    def _runner_exited(self, rec: _Child, ended: bool) -> None:
        temporary_stopped = self._stopping and rec.spec.restart is Restart.TEMPORARY
        if rec.removing or ended or temporary_stopped:
            self._remove(rec)

    def _on_exit(self) -> None:
        for rec in list(self._children.values()):
            if rec.removing or rec.spec.restart is Restart.TEMPORARY:
                self._remove(rec)

    def _remove(self, rec: _Child) -> None:
        if self._children.get(rec.spec.name) is rec:
            del self._children[rec.spec.name]
            log.info("child.removed supervisor=%s child=%s", self.name, rec.spec.name)


# ---------------------------------------------------------------------------------------------------
# Helpers.


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


def _q(value: object) -> str:
    """A log value: bare if it is one word, else JSON-quoted so the line stays ``key=value``."""
    text = str(value)
    return text if text and _BARE.match(text) else json.dumps(text)
