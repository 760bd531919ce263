"""One supervised child at run time.

The mutable records that only the supervisor's tasks write (:class:`_Run` per launch, :class:`_Child`
per child), the task status each attempt hands the child's factory (:class:`_Attempt`), and the
context variable through which :func:`heartbeat` and :func:`current_child_name` find the child.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from appliance.supervision.spec import ChildSpec, ChildState

# One logger for the whole tree, as before the split: log config and tests filter on its name.
log = logging.getLogger("appliance.supervisor")


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
    manual_restarts: int = 0  # restart_child calls (an operator's, a reload's)
    last_restart_requested_at: float | None = None
    attempts: int = 0  # the backoff exponent
    window: deque[float] = field(default_factory=deque)  # automatic restarts within max_seconds
    over_intensity: bool = False
    last_error: str | None = None
    last_error_trace: tuple[str, ...] = ()
    last_error_at: float | None = None
    # How many errors in a row were the same as last_error (same text and trace): a child that flaps
    # for months logs its traceback once, then one short line per crash.
    error_repeats: int = 0
    next_restart_at: float | None = None
    held_by: _Child | None = None  # rest_for_one: stopped until this earlier sibling is ready
    removing: bool = False  # dynamic: stop_child asked for removal

    def alive(self) -> bool:
        return self.run is not None and not self.run.done.is_set()
