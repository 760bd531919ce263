"""The machinery both supervisors share: :class:`_Tree`, base of ``Supervisor`` and ``DynamicSupervisor``.

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
import logging
import random
from collections.abc import Awaitable, Callable

import trio

from appliance.log import SUBSYSTEM, bind_subsystem
from appliance.supervision.child import _CURRENT, _Attempt, _Child, _Run
from appliance.supervision.snapshot import SupervisorSnapshot, _child_snapshot
from appliance.supervision.spec import (
    Backoff,
    ChildSpec,
    ChildState,
    HeartbeatTimeout,
    Restart,
    StartTimeout,
    Strategy,
    SupervisorEscalation,
)
from appliance.supervision.util import _check_name, _describe, _exc, _q

# One logger for the whole tree, as before the split: log config and tests filter on its name.
log = logging.getLogger("appliance.supervisor")


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
            rec.manual_restarts += 1
            rec.last_restart_requested_at = trio.current_time()
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
            children=tuple(_child_snapshot(rec, now) for rec in self._children.values()),
            taken_at=now,
            escalated=None if self._escalation is None else str(self._escalation),
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
        # What the tree says about a child (crashed, restarting, stopped) is filed under that child, so
        # `journalctl ... | grep subsystem=web` shows the web child's whole story.
        SUBSYSTEM.set(rec.spec.name)
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
                    "child.crashed child=%s restarts=%d backoff_s=%.2f error=%s same_as_before=%d",
                    spec.name,
                    rec.restarts,
                    delay,
                    _q(rec.last_error),
                    rec.error_repeats,
                    # The traceback once per distinct error, not once per crash of a flapping child.
                    exc_info=_exc(error) if rec.error_repeats == 0 else None,
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
        text, trace = _describe(error)
        same = (text, trace) == (rec.last_error, rec.last_error_trace)
        rec.error_repeats = rec.error_repeats + 1 if same else 0
        rec.last_error, rec.last_error_trace = text, trace
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
