"""The static supervisor's policies, under trio's autojump clock: every time asserted is virtual."""

from __future__ import annotations

import io
import json
import logging
import random
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from appliance import supervisor as sv
from appliance.log import SUBSYSTEM, LogfmtFormatter
from appliance.supervisor import (
    Backoff,
    ChildSpec,
    ChildState,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    current_child_name,
    heartbeat,
)

# No jitter, so restart times are exact: delays 1, 2, 4, 8, 8, ...
EXACT = Backoff(initial_s=1.0, max_s=8.0, factor=2.0, jitter=0.0, reset_after_s=10.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Step:
    """What one attempt of a scripted child does."""

    ready_after: float | None = 0.0  # None: never becomes ready
    end: str = "hang"  # "hang" (until cancelled), "crash" or "return"; "refuse": crash instead of ready
    after: float = 0.0  # time from ready to `end`
    beat_every: float | None = None  # heartbeat from a spawned task while running
    beat_for: float = 0.0  # ...for this long after ready


class Script:
    """A child factory that follows ``steps`` (the last one repeats) and writes a journal."""

    def __init__(self, name: str, *steps: Step, journal: list[tuple[float, str, str]] | None = None) -> None:
        self.name = name
        self.steps = steps or (Step(),)
        self.journal: list[tuple[float, str, str]] = journal if journal is not None else []
        self.attempts = 0
        self.live = 0

    def note(self, what: str) -> None:
        self.journal.append((trio.current_time(), self.name, what))

    def times(self, what: str) -> list[float]:
        return [t for t, n, w in self.journal if n == self.name and w == what]

    async def __call__(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        step = self.steps[min(self.attempts, len(self.steps) - 1)]
        self.attempts += 1
        self.live += 1
        self.note("start")
        try:
            if step.ready_after is None:
                await trio.sleep_forever()
            await trio.sleep(step.ready_after)
            if step.end == "refuse":
                raise OSError(f"{self.name} device busy")
            task_status.started()
            self.note("ready")
            async with trio.open_nursery() as nursery:
                if step.beat_every is not None:
                    nursery.start_soon(self._beat, step.beat_every, step.beat_for)
                await trio.sleep(step.after)
                if step.end == "hang":
                    await trio.sleep_forever()
                nursery.cancel_scope.cancel()
            # Raised out here, not inside the nursery, so that it arrives bare rather than in a group.
            if step.end == "crash":
                raise ValueError(f"{self.name} crash {self.attempts}")
            self.note("return")
        except BaseException as exc:
            if cancelled(exc):
                self.note("cancelled")
            raise
        finally:
            self.live -= 1

    async def _beat(self, every: float, total: float) -> None:
        end = trio.current_time() + total
        while trio.current_time() < end:
            await trio.sleep(every)
            heartbeat()
        await trio.sleep_forever()

    def spec(self, **kw: object) -> ChildSpec:
        return ChildSpec(name=self.name, factory=self, **kw)  # type: ignore[arg-type]


def cancelled(exc: BaseException) -> bool:
    """Cancelled, bare or as the only thing in (nested) groups, as a nursery raises it."""
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(trio.Cancelled)
        return match is not None and rest is None
    return isinstance(exc, trio.Cancelled)


def child(sup: Supervisor, name: str) -> sv.ChildSnapshot:
    return next(c for c in sup.snapshot().children if c.name == name)


# ---------------------------------------------------------------------------------------------------
# Restart policies and strategies.


async def test_one_for_one_isolates_a_crashing_sibling(autojump_clock: trio.testing.MockClock) -> None:
    journal: list[tuple[float, str, str]] = []
    a = Script("a", Step(end="crash", after=2.0), journal=journal)
    b = Script("b", journal=journal)
    sup = Supervisor("root", [a.spec(), b.spec()], backoff=EXACT, max_restarts=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(20.0)
        nursery.cancel_scope.cancel()
    # a: runs 2 s, crashes, backs off 1, 2, 4, 8 ... ; b is started once and only stopped at the end
    assert a.times("start") == [0.0, 3.0, 7.0, 13.0]
    assert b.times("start") == [0.0]
    assert b.times("cancelled") == [20.0]
    assert a.live == b.live == 0


async def test_rest_for_one_restarts_later_siblings_after_the_crashed_one_is_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: list[tuple[float, str, str]] = []
    a = Script("a", journal=journal)
    b = Script("b", Step(ready_after=0.5, end="crash", after=1.0), Step(ready_after=0.5), journal=journal)
    c = Script("c", Step(ready_after=0.25), journal=journal)
    d = Script("d", journal=journal)
    sup = Supervisor(
        "root", [a.spec(), b.spec(), c.spec(), d.spec()], strategy=Strategy.REST_FOR_ONE, backoff=EXACT
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 0.75  # b ready at 0.5, c at 0.75, d at once
        await trio.sleep(1.0)  # b crashes at 1.5: d then c are stopped (reverse order), held
        assert child(sup, "c").state is ChildState.BACKOFF
        assert child(sup, "d").state is ChildState.BACKOFF
        await trio.sleep(5.0)
        nursery.cancel_scope.cancel()
    assert a.times("start") == [0.0]
    assert b.times("start") == [0.0, 2.5]  # crash at 1.5 + backoff 1
    # stopped in reverse order at the crash, started again in order once b (3.0) and c (3.25) are ready
    assert [(t, n) for t, n, w in journal if w == "cancelled" and t < 2] == [(1.5, "d"), (1.5, "c")]
    assert c.times("start") == [0.5, 3.0]
    assert d.times("start") == [0.75, 3.25]
    snap = sup.snapshot()
    assert [x.restarts for x in snap.children] == [0, 1, 0, 0]  # collateral restarts are not the child's


async def test_permanent_restarts_after_normal_return(autojump_clock: trio.testing.MockClock) -> None:
    a = Script("a", Step(end="return", after=1.0))
    sup = Supervisor("root", [a.spec(restart=Restart.PERMANENT)], backoff=EXACT, max_restarts=100)
    with trio.move_on_after(6.0):
        await sup.run()
    assert a.times("start") == [0.0, 2.0, 5.0]
    assert child(sup, "a").last_error is None
    assert child(sup, "a").restarts == 2


async def test_transient_restarts_only_after_an_error(autojump_clock: trio.testing.MockClock) -> None:
    t = Script("t", Step(end="crash", after=1.0), Step(end="return", after=1.0))
    sup = Supervisor("root", [t.spec(restart=Restart.TRANSIENT)], backoff=EXACT)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10.0)
        assert t.times("start") == [0.0, 2.0]  # crash at 1 -> restart at 2 -> returns at 3, stays down
        snap = child(sup, "t")
        assert snap.state is ChildState.STOPPED and not snap.degraded
        assert snap.last_error == "ValueError: t crash 1"
        nursery.cancel_scope.cancel()


async def test_temporary_never_restarts(autojump_clock: trio.testing.MockClock) -> None:
    ok = Script("ok", Step(end="return", after=1.0))
    bad = Script("bad", Step(end="crash", after=1.0))
    sup = Supervisor("root", [ok.spec(restart=Restart.TEMPORARY), bad.spec(restart=Restart.TEMPORARY)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(100.0)
        assert ok.attempts == bad.attempts == 1
        assert child(sup, "ok").state is ChildState.STOPPED
        failed = child(sup, "bad")
        assert failed.state is ChildState.FAILED and failed.degraded and failed.restarts == 0
        assert sup.snapshot().healthy  # neither is critical
        nursery.cancel_scope.cancel()
    assert child(sup, "bad").state is ChildState.FAILED  # the record of why survives the stop


# ---------------------------------------------------------------------------------------------------
# Intensity and backoff.


async def test_critical_child_escalates_past_intensity(autojump_clock: trio.testing.MockClock) -> None:
    a = Script("a", Step(end="crash"))
    b = Script("b")
    sup = Supervisor(
        "root", [a.spec(critical=True), b.spec()], max_restarts=3, max_seconds=100.0, backoff=EXACT
    )
    with pytest.raises(SupervisorEscalation) as info:
        await sup.run()
    # crashes at 0, 1, 3, 7: the fourth would be restart number 4 within 100 s, one more than allowed
    assert a.times("start") == [0.0, 1.0, 3.0, 7.0]
    assert trio.current_time() == 7.0
    assert (info.value.supervisor, info.value.child, info.value.restarts, info.value.window_s) == (
        "root",
        "a",
        4,
        100,
    )
    assert isinstance(info.value.__cause__, ValueError)
    assert b.times("cancelled") == [7.0] and a.live == b.live == 0
    snap = sup.snapshot()
    assert snap.escalated is not None and "critical child a of root" in snap.escalated
    assert not snap.healthy
    assert [(c.name, c.state, c.restarts) for c in snap.children] == [
        ("a", ChildState.FAILED, 3),
        ("b", ChildState.STOPPED, 0),
    ]


async def test_zero_intensity_escalates_on_the_first_failed_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Script("a", Step(ready_after=None))
    b = Script("b")
    sup = Supervisor("root", [a.spec(critical=True, start_timeout_s=2.0), b.spec()], max_restarts=0)
    with pytest.raises(SupervisorEscalation):
        await sup.run()
    assert trio.current_time() == 2.0
    assert b.attempts == 0  # the escalation came before b's turn
    assert child(sup, "a").last_error == "StartTimeout: start timeout: not ready within 2s"


async def test_restarts_spread_beyond_the_window_never_escalate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Script("a", Step(end="crash", after=3.0))
    flat = Backoff(initial_s=1.0, max_s=1.0, jitter=0.0)
    sup = Supervisor("root", [a.spec(critical=True)], max_restarts=1, max_seconds=4.0, backoff=flat)
    with trio.move_on_after(98.0):
        await sup.run()
    # crashes every 4 s: the previous one is always exactly one window old, so never 2 in the window
    assert len(a.times("start")) == 25
    assert sup.snapshot().escalated is None


async def test_non_critical_never_escalates_and_backoff_caps(autojump_clock: trio.testing.MockClock) -> None:
    a = Script("a", Step(end="crash"))
    backoff = Backoff(initial_s=1.0, max_s=8.0, factor=2.0, jitter=0.0)
    sup = Supervisor("root", [a.spec()], max_restarts=2, max_seconds=1000.0, backoff=backoff)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(50.0)
        snap = sup.snapshot()
        nursery.cancel_scope.cancel()
    # delays 1, 2, then past intensity (3 restarts in the window) straight to the cap: 8, 8, ...
    assert a.times("start") == [0.0, 1.0, 3.0, 11.0, 19.0, 27.0, 35.0, 43.0]
    assert snap.healthy and snap.degraded and snap.escalated is None
    c = snap.children[0]
    assert c.state is ChildState.BACKOFF and c.degraded and c.healthy and not c.ok
    assert c.next_restart_in_s == pytest.approx(1.0)


async def test_backoff_grows_within_jitter_and_resets_after_a_stable_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    quick = Step(end="crash")
    stable = Step(end="crash", after=20.0)
    a = Script("a", quick, quick, quick, quick, stable, quick, quick, stable, stable, quick)
    backoff = Backoff(initial_s=1.0, max_s=100.0, factor=2.0, jitter=0.2, reset_after_s=15.0)
    sup = Supervisor("root", [a.spec()], max_restarts=100, backoff=backoff, rng=random.Random(7))
    with trio.move_on_after(200.0):
        await sup.run()
    starts = a.times("start")
    ends = [starts[i] + (20.0 if a.steps[min(i, 9)] is stable else 0.0) for i in range(len(starts))]
    gaps = [starts[i + 1] - ends[i] for i in range(len(starts) - 1)]
    # exponents 0, 1, 2, 3; the 5th attempt runs stably (>= 15 s ready), so the count starts over
    expected = [1, 2, 4, 8, 1, 2, 4, 1, 1, 2, 4, 8, 16, 32, 64]
    assert len(gaps) >= len(expected)
    for gap, base in zip(gaps, expected, strict=False):
        assert base * 0.8 <= gap <= base * 1.2, (gaps, expected)
    assert len({round(g / b, 6) for g, b in zip(gaps, expected, strict=False)}) > 1  # jitter did vary


def test_backoff_delay_and_validation() -> None:
    b = Backoff(initial_s=0.5, max_s=30.0, factor=2.0, jitter=0.2)
    assert [b.base(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.base(10_000) == 30.0  # no OverflowError
    rng = random.Random(1)
    assert all(24.0 <= b.delay(50, rng) <= 36.0 for _ in range(100))
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial_s=2.0, max_s=1.0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)


# ---------------------------------------------------------------------------------------------------
# Readiness, start timeouts, heartbeats.


async def test_children_start_in_order_each_after_the_previous_is_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: list[tuple[float, str, str]] = []
    a = Script("a", Step(ready_after=1.0), journal=journal)
    b = Script("b", Step(ready_after=2.0), journal=journal)
    c = Script("c", journal=journal)
    sup = Supervisor("root", [a.spec(critical=True), b.spec(critical=True), c.spec()])
    async with trio.open_nursery() as nursery:
        assert not sup.snapshot().all_ready()
        await nursery.start(sup.run)
        assert trio.current_time() == 3.0
        assert sup.snapshot().all_ready()
        nursery.cancel_scope.cancel()
    assert [(t, n) for t, n, w in journal if w == "start"] == [(0.0, "a"), (1.0, "b"), (3.0, "c")]


async def test_failed_first_start_does_not_block_siblings(autojump_clock: trio.testing.MockClock) -> None:
    a = Script("a", Step(ready_after=0.25, end="refuse"), Step(ready_after=0.5))
    b = Script("b")
    sup = Supervisor("root", [a.spec(), b.spec()], backoff=EXACT)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 0.25  # a failed at 0.25, b started at once
        assert b.times("start") == [0.25]
        assert child(sup, "a").state is ChildState.BACKOFF
        await trio.sleep(2.0)
        assert a.times("start") == [0.0, 1.25] and a.times("ready") == [1.75]
        assert child(sup, "a").last_error == "OSError: a device busy"
        assert child(sup, "a").restarts == 1
        nursery.cancel_scope.cancel()


async def test_start_timeout_counts_as_a_failed_start(autojump_clock: trio.testing.MockClock) -> None:
    a = Script("a", Step(ready_after=None), Step(ready_after=None), Step())
    b = Script("b")
    sup = Supervisor("root", [a.spec(start_timeout_s=2.0), b.spec()], backoff=EXACT)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 2.0 and b.times("start") == [2.0]
        await trio.sleep(10.0)
        # timed out at 2, restarted at 3, timed out at 5, restarted at 7 and ready
        assert a.times("start") == [0.0, 3.0, 7.0]
        assert a.times("cancelled") == [2.0, 5.0]
        snap = child(sup, "a")
        assert snap.state is ChildState.RUNNING and snap.restarts == 2
        assert snap.last_error == "StartTimeout: start timeout: not ready within 2s"
        nursery.cancel_scope.cancel()


async def test_heartbeat_timeout_restarts_a_hung_child(autojump_clock: trio.testing.MockClock) -> None:
    a = Script("a", Step(beat_every=0.5, beat_for=3.0), Step(beat_every=0.5, beat_for=1000.0))
    b = Script("b")
    sup = Supervisor("root", [a.spec(heartbeat_s=1.0), b.spec()], backoff=EXACT)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(3.9)
        assert child(sup, "a").state is ChildState.RUNNING  # last beat at 3.0
        await trio.sleep(0.2)
        snap = child(sup, "a")
        assert snap.state is ChildState.BACKOFF and snap.last_error_at == 4.0
        assert snap.last_error == "HeartbeatTimeout: heartbeat timeout: none for 1s"
        await trio.sleep(100.0)  # the second attempt keeps beating: no more restarts
        assert a.times("start") == [0.0, 5.0] and a.times("cancelled") == [4.0]
        assert b.times("start") == [0.0] and b.times("cancelled") == []
        nursery.cancel_scope.cancel()


async def test_heartbeat_from_a_worker_thread(mock_clock: trio.testing.MockClock) -> None:
    seen: list[object] = []
    done = trio.Event()

    async def worker(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        attempt = sv._CURRENT.get()
        assert attempt is not None
        attempt.last_beat = -1.0
        await trio.to_thread.run_sync(heartbeat)  # to_thread copies the context: the beat finds its child
        seen.append(attempt.last_beat)
        seen.append(await trio.to_thread.run_sync(current_child_name))
        done.set()
        await trio.sleep_forever()

    sup = Supervisor("root", [ChildSpec(name="w", factory=worker, heartbeat_s=5.0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await done.wait()
        nursery.cancel_scope.cancel()
    assert seen == [trio.current_time(), "w"]  # the clock stands still: the beat is "now"
    heartbeat()  # outside any child: nothing to do, no error
    assert current_child_name() is None


# ---------------------------------------------------------------------------------------------------
# Stopping and operator restarts.


async def test_stop_is_in_reverse_start_order_within_shutdown_timeouts(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.supervisor")
    order: list[tuple[float, str]] = []

    def make(name: str, cleanup_s: float) -> ChildSpec:
        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                order.append((trio.current_time(), name))
                with trio.CancelScope(shield=True):
                    await trio.sleep(cleanup_s)
                order.append((trio.current_time(), name + " done"))

        return ChildSpec(name=name, factory=run, shutdown_s=1.0)

    sup = Supervisor("root", [make("a", 0.5), make("b", 3.0), make("c", 0.5)])
    with trio.move_on_after(10.0):
        await sup.run()
    # c stops in 0.5 s; b overruns its 1 s, so a's stop begins at 11.5, and we return when b is done
    assert order == [
        (10.0, "c"),
        (10.5, "c done"),
        (10.5, "b"),
        (11.5, "a"),
        (12.0, "a done"),
        (13.5, "b done"),
    ]
    assert trio.current_time() == 13.5
    assert [c.state for c in sup.snapshot().children] == [ChildState.STOPPED] * 3
    assert any("child.stop_slow child=b shutdown_s=1.00" in r.getMessage() for r in caplog.records)
    stopped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("child.stopped")]
    assert [m.split()[1] for m in stopped] == ["child=c", "child=a", "child=b"]  # in the order they exited


async def test_cancel_during_start_and_backoff_leaks_nothing(autojump_clock: trio.testing.MockClock) -> None:
    a = Script("a", Step(end="crash", after=0.5))
    b = Script("b", Step(ready_after=10.0))
    c = Script("c")
    sup = Supervisor("root", [a.spec(), b.spec(), c.spec()], backoff=EXACT)
    with trio.move_on_after(3.0):  # a in backoff, b still starting, c never started
        await sup.run()
    assert (a.live, b.live, c.attempts) == (0, 0, 0)
    assert [x.state for x in sup.snapshot().children] == [ChildState.STOPPED] * 3


async def test_restart_child_with_a_new_spec(autojump_clock: trio.testing.MockClock) -> None:
    a = Script("a")
    b = Script("b")
    a2 = Script("a", Step(ready_after=1.0))
    sup = Supervisor("root", [a.spec(), b.spec()])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(5.0)
        await sup.restart_child("a", a2.spec(critical=True))
        assert trio.current_time() == 6.0  # waited until the new one was ready
        assert a.times("cancelled") == [5.0] and a2.times("ready") == [6.0]
        assert b.times("start") == [0.0] and b.times("cancelled") == []
        snap = child(sup, "a")
        assert snap.critical and snap.ok and snap.restarts == 0  # operator restarts don't count
        assert sup.specs[0].factory is a2 and sup.names == ("a", "b")
        # the caller may be cancelled: the restart still completes
        with trio.move_on_after(0.5):
            await sup.restart_child("a")
        assert child(sup, "a").state is ChildState.STARTING
        await trio.sleep(1.0)
        assert child(sup, "a").ok and a2.times("ready") == [6.0, 7.0]
        with pytest.raises(KeyError):
            await sup.restart_child("zzz")
        with pytest.raises(ValueError, match="named"):
            await sup.restart_child("a", b.spec())
        nursery.cancel_scope.cancel()
    with pytest.raises(RuntimeError, match="not running"):
        await sup.restart_child("a")


async def test_restart_child_rest_for_one_restarts_later_ones(autojump_clock: trio.testing.MockClock) -> None:
    journal: list[tuple[float, str, str]] = []
    a, b, c = (Script(n, Step(ready_after=1.0), journal=journal) for n in "abc")
    sup = Supervisor("root", [a.spec(), b.spec(), c.spec()], strategy=Strategy.REST_FOR_ONE)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await sup.restart_child("b")
        assert trio.current_time() == 5.0  # b ready at 4, c ready at 5
        nursery.cancel_scope.cancel()
    assert journal[6:12] == [  # after a, b and c started and became ready
        (3.0, "c", "cancelled"),
        (3.0, "b", "cancelled"),
        (3.0, "b", "start"),
        (4.0, "b", "ready"),
        (4.0, "c", "start"),
        (5.0, "c", "ready"),
    ]
    assert a.attempts == 1


# ---------------------------------------------------------------------------------------------------
# Errors, snapshots, logging.


async def test_exception_group_is_a_crash_summarised_by_its_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def two_fail(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def fail(exc: Exception) -> None:
            raise exc

        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, ValueError("bad frame"))
            nursery.start_soon(fail, KeyError("k"))

    async def one_fails(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise OSError("link down")

    specs = [ChildSpec(name="two", factory=two_fail), ChildSpec(name="one", factory=one_fails)]
    sup = Supervisor("root", specs, backoff=EXACT)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(0.5)
        two, one = sup.snapshot().children
        nursery.cancel_scope.cancel()
    assert two.last_error is not None and two.last_error.startswith("ExceptionGroup: ")
    assert "ValueError: bad frame" in two.last_error and "KeyError: 'k'" in two.last_error
    assert two.last_error_trace[-1].endswith("in fail")
    assert one.last_error == "OSError: link down"
    assert (
        one.last_error_trace[-1].startswith("unit/test_supervisor.py:")
        and "in one_fails" in one.last_error_trace[-1]
    )


async def test_snapshot_contents_grace_and_failing(autojump_clock: trio.testing.MockClock) -> None:
    web = Script("web", Step(end="crash", after=4.0), Step(ready_after=None))
    cam = Script("cam", Step(end="crash", after=2.0))
    sup = Supervisor(
        "root",
        [web.spec(critical=True, grace_s=3.0, start_timeout_s=None), cam.spec()],
        backoff=EXACT,
        max_restarts=100,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1.0)
        snap = sup.snapshot()
        assert snap.taken_at == 1.0 and snap.strategy == "one_for_one"
        w = snap.children[0]
        assert (w.state, w.ready, w.ok, w.uptime_s, w.down_for_s, w.healthy) == (
            ChildState.RUNNING,
            True,
            True,
            1.0,
            None,
            True,
        )
        assert snap.healthy and not snap.degraded and snap.failing() == []
        await trio.sleep(1.5)  # cam crashed at 2, restarts at 3
        cam_snap = sup.snapshot().children[1]
        assert cam_snap.state is ChildState.BACKOFF and cam_snap.next_restart_in_s == 0.5
        assert cam_snap.last_error == "ValueError: cam crash 1" and cam_snap.last_error_at == 2.0
        assert cam_snap.last_error_trace and "in __call__" in cam_snap.last_error_trace[-1]
        assert cam_snap.uptime_s is None and cam_snap.degraded and cam_snap.healthy
        assert sup.snapshot().degraded and sup.snapshot().healthy
        await trio.sleep(2.0)  # web crashed at 4, restarts at 5, never ready again
        w = sup.snapshot().children[0]
        assert w.state is ChildState.BACKOFF and w.down_for_s == 0.5 and w.healthy
        await trio.sleep(2.5)  # down 3 s: past its grace
        snap = sup.snapshot()
        assert snap.children[0].state is ChildState.STARTING
        assert not snap.children[0].healthy and not snap.healthy and not snap.degraded
        assert snap.failing() == ["web"]
        assert snap.all_ready()  # it was ready once: READY=1 stays sent
        doc = json.loads(json.dumps(snap.to_dict()))
        assert doc["healthy"] is False and doc["failing"] == ["web"]
        assert doc["children"][0]["state"] == "starting" and doc["children"][0]["restart"] == "permanent"
        assert doc["children"][1]["last_error_trace"] == list(snap.children[1].last_error_trace)
        nursery.cancel_scope.cancel()


async def test_nested_supervisor_snapshot(autojump_clock: trio.testing.MockClock) -> None:
    push = Script("push:x", Step(end="crash", after=1.0))
    rtmp = Script("relay")
    inner = Supervisor("egress", [push.spec(critical=True)], max_restarts=1, max_seconds=100.0, backoff=EXACT)
    root = Supervisor(
        "root",
        [rtmp.spec(critical=True), inner.as_child(critical=True, grace_s=100.0)],
        backoff=EXACT,
        max_restarts=100,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        snap = root.snapshot()
        egress = snap.children[1]
        assert egress.children is not None and egress.children.name == "egress"
        assert [p for p, _ in snap.walk()] == ["relay", "egress", "egress/push:x"]
        await trio.sleep(1.5)  # push:x crashed at 1, restarts at 2; egress itself is fine
        snap = root.snapshot()
        assert snap.children[1].ok and snap.healthy and snap.degraded  # push:x down 0.5 s of its 5 s grace
        assert snap.failing() == []
        nursery.cancel_scope.cancel()


async def test_nested_escalation_restarts_the_nested_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    push = Script("push:x", Step(end="crash", after=1.0))
    inner = Supervisor("egress", [push.spec(critical=True, grace_s=0.0)], max_restarts=1, backoff=EXACT)
    root = Supervisor("root", [inner.as_child(critical=True, grace_s=60.0)], backoff=EXACT)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await trio.sleep(1.5)
        snap = root.snapshot()
        assert snap.failing() == ["egress/push:x"]  # grace 0 inside, egress itself up
        await trio.sleep(2.0)  # push:x crashes at 1 and 3: 2 restarts > 1, egress escalates at 3
        egress = root.snapshot().children[0]
        assert egress.state is ChildState.BACKOFF and egress.restarts == 0
        assert egress.last_error is not None and egress.last_error.startswith(
            "SupervisorEscalation: critical"
        )
        assert egress.children is not None and egress.children.escalated is not None
        assert root.snapshot().healthy and root.snapshot().failing() == []  # egress is within its grace
        await trio.sleep(1.0)  # root restarts egress at 4, which starts push:x afresh
        egress = root.snapshot().children[0]
        assert egress.ok and egress.restarts == 1
        assert egress.children is not None and egress.children.escalated is None
        assert push.times("start") == [0.0, 2.0, 4.0]
        nursery.cancel_scope.cancel()
    assert push.live == 0


async def test_children_log_under_their_own_name(autojump_clock: trio.testing.MockClock) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogfmtFormatter())
    logger = logging.getLogger("appliance")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    seen: dict[str, str | None] = {}

    async def cam(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        seen["task"] = SUBSYSTEM.get()
        seen["child"] = current_child_name()

        async def spawned() -> None:
            seen["spawned"] = SUBSYSTEM.get()
            logging.getLogger("appliance.capture").info("capture.frame n=%d", 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(spawned)
        task_status.started()
        raise ValueError("bad frame")

    try:
        sup = Supervisor("root", [ChildSpec(name="cam", factory=cam)], backoff=EXACT)
        with trio.move_on_after(0.5):
            await sup.run()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert seen == {"task": "cam", "child": "cam", "spawned": "cam"}
    lines = out.getvalue().splitlines()
    assert any("subsystem=cam event=capture.frame n=1" in line for line in lines)
    assert any("subsystem=cam event=child.ready child=cam" in line for line in lines)
    crashed = next(line for line in lines if "event=child.crashed" in line)
    assert "subsystem=cam" in crashed  # what the tree says about a child is filed under that child
    assert 'child=cam restarts=0 backoff_s=1.00 error="ValueError: bad frame"' in crashed


def test_spec_and_supervisor_validation() -> None:
    async def f(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        pass

    for bad in ("", "a/b", "a b", 'a"b'):
        with pytest.raises(ValueError, match="name"):
            ChildSpec(name=bad, factory=f)
    with pytest.raises(ValueError, match="heartbeat_s"):
        ChildSpec(name="x", factory=f, heartbeat_s=0.0)
    with pytest.raises(ValueError, match="shutdown_s"):
        ChildSpec(name="x", factory=f, shutdown_s=-1.0)
    with pytest.raises(ValueError, match="duplicate"):
        Supervisor("root", [ChildSpec(name="x", factory=f), ChildSpec(name="x", factory=f)])
    with pytest.raises(ValueError, match="max_restarts"):
        Supervisor("root", [], max_restarts=-1)


async def test_run_twice_at_once_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    sup = Supervisor("root", [Script("a").spec()])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert sup.running
        with pytest.raises(RuntimeError, match="already running"):
            await sup.run()
        nursery.cancel_scope.cancel()
    assert not sup.running


async def test_errors_while_unwinding_a_cancellation_are_recorded_not_raised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def messy(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def bad_cleanup() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise ValueError("cleanup failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bad_cleanup)
            nursery.start_soon(trio.sleep_forever)
            task_status.started()

    # Stopped by the shutdown: a Cancelled and a ValueError come out together, as one BaseExceptionGroup.
    sup = Supervisor("root", [ChildSpec(name="m", factory=messy)])
    with trio.move_on_after(1.0):
        await sup.run()
    snap = child(sup, "m")
    assert snap.state is ChildState.STOPPED and snap.last_error == "ValueError: cleanup failed"

    # Cancelled by its watcher for a missed heartbeat: that stays the reason, and it restarts.
    sup = Supervisor("root", [ChildSpec(name="m", factory=messy, heartbeat_s=1.0)], backoff=EXACT)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(1.5)
        snap = child(sup, "m")
        assert snap.state is ChildState.BACKOFF
        assert snap.last_error == "HeartbeatTimeout: heartbeat timeout: none for 1s"
        nursery.cancel_scope.cancel()


async def test_misbehaving_children(autojump_clock: trio.testing.MockClock) -> None:
    async def twice(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        task_status.started()

    never = Script("never", Step(end="return", ready_after=None))

    async def no_ready(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        never.attempts += 1  # returns at once without ever calling started()

    sup = Supervisor(
        "root",
        [ChildSpec(name="twice", factory=twice), ChildSpec(name="quiet", factory=no_ready)],
        backoff=EXACT,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        assert trio.current_time() == 0.0  # neither blocks the start
        await trio.sleep(2.5)
        twice_snap, quiet = sup.snapshot().children
        assert twice_snap.last_error == "RuntimeError: called 'started' twice on the same task status"
        assert quiet.last_error is None and quiet.state is ChildState.BACKOFF and not quiet.ever_ready
        assert never.attempts == 2  # permanent: a return, even before ready, restarts it (at 1)
        nursery.cancel_scope.cancel()


async def test_a_flapping_child_logs_its_traceback_once_per_distinct_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    errors = iter([OSError("gone"), OSError("gone"), OSError("gone"), ValueError("new"), ValueError("new")])

    async def cam(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise next(errors)

    caplog.set_level(logging.WARNING, logger="appliance.supervisor")
    sup = Supervisor("root", [ChildSpec(name="cam", factory=cam)], backoff=EXACT, max_restarts=100)
    with trio.move_on_after(60):
        await sup.run()
    crashes = [r for r in caplog.records if r.getMessage().startswith("child.crashed")]
    assert [r.getMessage().rsplit("same_as_before=", 1)[1] for r in crashes[:5]] == ["0", "1", "2", "0", "1"]
    assert [r.exc_info is not None for r in crashes[:5]] == [True, False, False, True, False]
