"""Property tests: random crash/hang schedules against an independent model of restart intensity.

Each example is its own ``trio.run`` under ``MockClock(autojump_threshold=0)`` (pytest-trio's fixtures
don't combine with ``@given``). Every scheduled time is a multiple of 0.25 s and the tree is cancelled at
``k + 0.125`` s, so no child event coincides with the cancellation and the model can tell a watchdog
cancellation (heartbeat, start timeout) from the final stop by its time alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.supervisor import (
    Backoff,
    ChildSpec,
    ChildStartError,
    ChildState,
    DynamicSupervisor,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorSnapshot,
    heartbeat,
)
from tests.fuzz import examples
from tests.unit.test_supervisor import cancelled

HEARTBEAT_S = 2.0
START_TIMEOUT_S = 3.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Act:
    kind: str  # "crash", "return", "hang" (beating or not), "never_ready"
    ready: bool = True  # become ready first (crash/return)
    after: float = 0.0
    beats: bool = False  # while hanging


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    name: str
    restart: Restart
    critical: bool
    heartbeat: bool
    acts: tuple[Act, ...]


@dataclass(kw_only=True)
class Attempt:
    start: float
    end: float | None = None
    kind: str | None = None  # "error", "return", "cancelled"


@dataclass(kw_only=True)
class Counter:
    live: int = 0
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)


def scripted(plan: Plan, counter: Counter) -> ChildSpec:
    attempts = counter.attempts.setdefault(plan.name, [])

    async def idle() -> None:
        counter.live += 1
        try:
            await trio.sleep_forever()
        finally:
            counter.live -= 1

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        act = plan.acts[min(len(attempts), len(plan.acts) - 1)]
        attempt = Attempt(start=trio.current_time())
        attempts.append(attempt)
        counter.live += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(idle)  # a task of the child's own, which must not outlive it
                if act.kind == "never_ready":
                    await trio.sleep_forever()
                if act.ready:
                    task_status.started()
                if act.kind == "hang":
                    while True:
                        await trio.sleep(0.5)
                        if act.beats:
                            heartbeat()
                await trio.sleep(act.after)
                nursery.cancel_scope.cancel()
            if act.kind == "crash":
                raise ValueError(f"{plan.name} scheduled crash")
        except BaseException as exc:
            attempt.kind = "cancelled" if cancelled(exc) else "error"
            raise
        else:
            attempt.kind = "return"
        finally:
            attempt.end = trio.current_time()
            counter.live -= 1

    return ChildSpec(
        name=plan.name,
        factory=run,
        restart=plan.restart,
        critical=plan.critical,
        heartbeat_s=HEARTBEAT_S if plan.heartbeat else None,
        start_timeout_s=START_TIMEOUT_S,
        shutdown_s=1.0,
    )


quarter = st.integers(min_value=0, max_value=12).map(lambda n: n / 4)
acts = st.one_of(
    st.builds(Act, kind=st.just("crash"), ready=st.booleans(), after=quarter),
    st.builds(Act, kind=st.just("return"), ready=st.booleans(), after=quarter),
    st.builds(Act, kind=st.just("hang"), beats=st.booleans()),
    st.builds(Act, kind=st.just("never_ready")),
)


@st.composite
def plans(draw: st.DrawFn) -> list[Plan]:
    n = draw(st.integers(min_value=1, max_value=4))
    return [
        Plan(
            name=f"c{i}",
            restart=draw(st.sampled_from(Restart)),
            critical=draw(st.booleans()),
            heartbeat=draw(st.booleans()),
            acts=tuple(draw(st.lists(acts, min_size=1, max_size=4))),
        )
        for i in range(n)
    ]


@dataclass(kw_only=True)
class Outcome:
    escalation: SupervisorEscalation | None
    stopped_at: float
    snapshot: SupervisorSnapshot
    counter: Counter


def run_tree(
    ps: list[Plan],
    *,
    strategy: Strategy,
    max_restarts: int,
    window_s: float,
    initial_s: float,
    stop_at: float,
    ops: Sequence[tuple[float, int]] = (),
) -> Outcome:
    counter = Counter()
    backoff = Backoff(initial_s=initial_s, max_s=4.0, factor=2.0, jitter=0.0, reset_after_s=5.0)
    sup = Supervisor(
        "root",
        [scripted(p, counter) for p in ps],
        strategy=strategy,
        max_restarts=max_restarts,
        max_seconds=window_s,
        backoff=backoff,
    )
    result: dict[str, object] = {}

    async def operator() -> None:  # restart requests from the web API, at the given times
        for at, i in sorted(ops):
            await trio.sleep_until(at)
            try:
                await sup.restart_child(ps[i % len(ps)].name)
            except RuntimeError:  # not running any more (escalated)
                return

    async def main() -> None:
        with trio.move_on_after(stop_at):
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(operator)
                    await sup.run()
            except* SupervisorEscalation as group:
                result["escalation"] = group.exceptions[0]
        result["stopped_at"] = trio.current_time()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    esc = result.get("escalation")
    assert esc is None or isinstance(esc, SupervisorEscalation)
    stopped_at = result["stopped_at"]
    assert isinstance(stopped_at, float)
    return Outcome(escalation=esc, stopped_at=stopped_at, snapshot=sup.snapshot(), counter=counter)


def restarts_wanted(plan: Plan, attempt: Attempt, stop_time: float) -> bool:
    """Whether the model's supervisor decides to restart after this attempt ended (before the stop)."""
    assert attempt.end is not None
    if attempt.kind == "cancelled" and attempt.end >= stop_time:
        return False  # stopped by the shutdown (or the escalation), not a failure
    failed = attempt.kind in ("error", "cancelled")  # cancelled early = heartbeat or start timeout
    return plan.restart is Restart.PERMANENT or (plan.restart is Restart.TRANSIENT and failed)


def in_window(times: list[float], t: float, window_s: float) -> int:
    return sum(1 for x in times if t - window_s < x <= t)


def check_cleanly_stopped(ps: list[Plan], out: Outcome) -> None:
    assert out.counter.live == 0, "a child task outlived the tree"
    for plan, snap in zip(ps, out.snapshot.children, strict=True):
        assert snap.state in (ChildState.STOPPED, ChildState.FAILED), snap
        assert not snap.ready and snap.uptime_s is None
        if snap.state is ChildState.FAILED:  # the record of a failure that was not restarted
            escalated = out.escalation is not None and out.escalation.child == plan.name
            assert plan.restart is not Restart.PERMANENT or escalated, snap
        for attempt in out.counter.attempts.get(plan.name, []):
            assert attempt.end is not None and attempt.end <= out.stopped_at


@settings(max_examples=examples(200), deadline=None)
@given(
    ps=plans(),
    max_restarts=st.integers(min_value=0, max_value=3),
    window_s=st.sampled_from([2.0, 5.0, 10.0, 30.0]),
    initial_s=st.sampled_from([0.25, 0.5, 1.0]),
    stop_k=st.integers(min_value=1, max_value=60),
)
def test_one_for_one_intensity_matches_the_model(
    ps: list[Plan], max_restarts: int, window_s: float, initial_s: float, stop_k: int
) -> None:
    stop_at = stop_k + 0.125
    out = run_tree(
        ps,
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=max_restarts,
        window_s=window_s,
        initial_s=initial_s,
        stop_at=stop_at,
    )
    check_cleanly_stopped(ps, out)
    stop_time = stop_at if out.escalation is None else out.stopped_at
    if out.escalation is None:
        assert out.stopped_at == stop_at
    else:
        assert out.stopped_at < stop_at  # children stop at once, so the escalation is raised at once

    for plan, snap in zip(ps, out.snapshot.children, strict=True):
        attempts = out.counter.attempts.get(plan.name, [])
        assert snap.restarts == max(0, len(attempts) - 1)  # one_for_one: every new attempt is a restart
        decisions = [a.end for a in attempts if a.end is not None and restarts_wanted(plan, a, stop_time)]
        # Never past intensity without escalating: every restart decision before the stop was within it.
        if plan.critical:
            for t in decisions:
                if t < stop_time:
                    assert in_window(decisions, t, window_s) <= max_restarts, (plan, decisions)

    if out.escalation is not None:
        # ...and escalation only when a critical child's decision took it one past intensity.
        esc = out.escalation
        plan = next(p for p in ps if p.name == esc.child)
        attempts = out.counter.attempts[plan.name]
        # Its last attempt ended at the escalation, whichever way (a watchdog cancellation looks like the
        # stop, from the child's side): that end was the decision that went past intensity.
        decisions = [
            a.end for a in attempts[:-1] if a.end is not None and restarts_wanted(plan, a, stop_time)
        ]
        assert plan.critical and attempts[-1].end == stop_time
        assert in_window([*decisions, stop_time], stop_time, window_s) == max_restarts + 1 == esc.restarts
        assert out.snapshot.escalated is not None and not out.snapshot.healthy


ops = st.lists(
    st.tuples(st.integers(min_value=1, max_value=240).map(lambda n: n / 4), st.integers(0, 3)), max_size=4
)


@settings(max_examples=examples(100), deadline=None)
@given(
    ps=plans(),
    strategy=st.sampled_from(Strategy),
    max_restarts=st.integers(min_value=0, max_value=3),
    stop_k=st.integers(min_value=1, max_value=60),
    restarts=ops,
)
def test_any_strategy_with_operator_restarts_stops_cleanly(
    ps: list[Plan], strategy: Strategy, max_restarts: int, stop_k: int, restarts: list[tuple[float, int]]
) -> None:
    out = run_tree(
        ps,
        strategy=strategy,
        max_restarts=max_restarts,
        window_s=10.0,
        initial_s=0.5,
        stop_at=stop_k + 0.125,
        ops=restarts,
    )
    check_cleanly_stopped(ps, out)
    if out.escalation is not None:
        assert next(p for p in ps if p.name == out.escalation.child).critical


@settings(max_examples=examples(100), deadline=None)
@given(
    ps=plans(),
    starts=st.lists(st.integers(min_value=0, max_value=120).map(lambda n: n / 4), min_size=4, max_size=4),
    stops=ops,
    restarts=ops,
    stop_k=st.integers(min_value=1, max_value=40),
)
def test_dynamic_supervisor_under_random_operations_stops_cleanly(
    ps: list[Plan],
    starts: list[float],
    stops: list[tuple[float, int]],
    restarts: list[tuple[float, int]],
    stop_k: int,
) -> None:
    counter = Counter()
    backoff = Backoff(initial_s=0.5, max_s=4.0, jitter=0.0)
    sup = DynamicSupervisor("egress", max_restarts=2, max_seconds=10.0, backoff=backoff)
    specs = [scripted(p, counter) for p in ps]
    escalations: list[SupervisorEscalation] = []

    async def at(t: float, fn: Callable[[], Awaitable[None]]) -> None:
        await trio.sleep_until(t)
        # Each may race a child ending on its own, or the supervisor escalating: all refusals are fine.
        with contextlib.suppress(KeyError, ValueError, RuntimeError, ChildStartError):
            await fn()

    async def main() -> None:
        with trio.move_on_after(stop_k + 0.125):
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(sup.run)
                    for spec, t in zip(specs, starts, strict=False):
                        nursery.start_soon(at, t, partial(sup.start_child, spec))
                    for t, i in stops:
                        nursery.start_soon(at, t, partial(sup.stop_child, ps[i % len(ps)].name))
                    for t, i in restarts:
                        nursery.start_soon(at, t, partial(sup.restart_child, ps[i % len(ps)].name))
            except* SupervisorEscalation as group:
                escalations.extend(e for e in group.exceptions if isinstance(e, SupervisorEscalation))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert counter.live == 0, "a child task outlived the tree"
    snap = sup.snapshot()
    for c in snap.children:
        assert c.state in (ChildState.STOPPED, ChildState.FAILED) and c.restart is not Restart.TEMPORARY
    assert len(escalations) <= 1
    if escalations:
        assert next(p for p in ps if p.name == escalations[0].child).critical
