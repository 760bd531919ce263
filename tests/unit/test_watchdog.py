"""The watchdog against a real AF_UNIX datagram socket that the test binds and reads."""

from __future__ import annotations

import socket
import threading
import time
from functools import partial

import pytest
import trio

from appliance.supervisor import ChildSpec, Supervisor
from appliance.watchdog import Notifier, WatchdogSettings, WatchdogStats, run_watchdog, status_line


@pytest.fixture
def notify(notify_socket: tuple[socket.socket, str]) -> tuple[socket.socket, str]:
    notify_socket[0].setblocking(False)
    return notify_socket


def drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def pets(messages: list[str]) -> int:
    return sum(m.split("\n").count("WATCHDOG=1") for m in messages)


class Switch:
    """A critical child that is up, or crashes at once on every start, as the test says."""

    def __init__(self) -> None:
        self.broken = False
        self.crash = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.broken:
            raise RuntimeError("camera gone")
        task_status.started()
        await self.crash.wait()
        self.crash = trio.Event()
        raise RuntimeError("crashed")


def test_settings_from_env() -> None:
    s = WatchdogSettings.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}, pid=5)
    assert s.notify_socket == "/run/x" and s.interval_s == 15.0
    s = WatchdogSettings.from_env(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4"}, pid=5
    )
    assert s.interval_s is None  # the pets are for another process
    s = WatchdogSettings.from_env({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "5"}, pid=5)
    assert s.notify_socket is None and s.interval_s == 15.0
    assert WatchdogSettings.from_env({}, pid=1) == WatchdogSettings(notify_socket=None, interval_s=None)


def test_notifier_without_socket_sends_nothing() -> None:
    n = Notifier(None)
    assert not n.enabled
    assert n.send("READY=1") is False


def test_notifier_abstract_socket() -> None:
    name = f"appliance-test-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = Notifier("@" + name)
        assert n.send("READY=1", "STATUS=x")
        assert sock.recv(100) == b"READY=1\nSTATUS=x"
        n.close()
    finally:
        sock.close()


async def test_ready_pets_gating_and_stopping(
    notify: tuple[socket.socket, str], autojump_clock: object
) -> None:
    sock, path = notify
    web = Switch()
    sup = Supervisor("root", [ChildSpec(name="web", factory=web.run, critical=True, grace_s=2.0)])
    settings = WatchdogSettings(notify_socket=path, interval_s=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await nursery.start(partial(run_watchdog, sup.snapshot, settings))
        await trio.sleep(0.1)
        first = drain(sock)
        assert first and first[0].startswith("READY=1\nSTATUS=ok (1/1 up)")
        await trio.sleep(2.0)
        assert pets(drain(sock)) == 4  # every 0.5 s

        # the critical child goes down and stays down: pets stop once its grace has passed
        web.broken = True
        web.crash.set()
        await trio.sleep(2.0 + 0.5)  # grace + one tick
        drain(sock)
        await trio.sleep(3.0)
        down = drain(sock)
        assert pets(down) == 0
        assert not sup.snapshot().healthy

        # it comes back: pets resume
        web.broken = False
        await trio.sleep(60.0)  # longer than the capped backoff
        assert sup.snapshot().healthy
        drain(sock)
        await trio.sleep(1.0)
        assert pets(drain(sock)) == 2
        nursery.cancel_scope.cancel()
    assert drain(sock)[-1] == "STOPPING=1\nSTATUS=stopping"


async def test_stats_count_pets_sent_and_withheld(
    notify: tuple[socket.socket, str], autojump_clock: object
) -> None:
    sock, path = notify
    web = Switch()
    sup = Supervisor("root", [ChildSpec(name="web", factory=web.run, critical=True, grace_s=1.0)])
    stats = WatchdogStats()
    settings = WatchdogSettings(notify_socket=path, interval_s=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await nursery.start(partial(run_watchdog, sup.snapshot, settings, stats=stats))
        await trio.sleep(2.25)
        sent = pets(drain(sock))
        assert stats.enabled and stats.ready_sent
        assert stats.pets == sent > 0 and stats.withheld == 0
        web.broken = True
        web.crash.set()
        await trio.sleep(3.0)  # past the grace: pets stop, the ticks count as withheld
        sent += pets(drain(sock))
        assert stats.pets == sent
        assert stats.withheld >= 3
        nursery.cancel_scope.cancel()


async def test_stats_without_systemd_stay_off(autojump_clock: object) -> None:
    stats = WatchdogStats()
    with trio.move_on_after(5):
        await run_watchdog(
            Supervisor("root", []).snapshot,
            WatchdogSettings(notify_socket=None, interval_s=None),
            stats=stats,
        )
    assert stats == WatchdogStats()


async def test_short_outage_within_grace_keeps_petting(
    notify: tuple[socket.socket, str], autojump_clock: object
) -> None:
    sock, path = notify
    web = Switch()
    sup = Supervisor("root", [ChildSpec(name="web", factory=web.run, critical=True, grace_s=5.0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await nursery.start(
            partial(run_watchdog, sup.snapshot, WatchdogSettings(notify_socket=path, interval_s=0.5))
        )
        await trio.sleep(1.25)  # between two ticks, so no tick shares a virtual instant with the test
        drain(sock)
        web.crash.set()  # restarts after the first backoff (~0.5 s), well inside the grace
        await trio.sleep(3.0)
        assert pets(drain(sock)) == 6
        assert sup.snapshot().children[0].restarts == 1
        nursery.cancel_scope.cancel()


async def test_no_notify_socket_sends_nothing(autojump_clock: object) -> None:
    sup = Supervisor("root", [])
    with trio.move_on_after(5):
        await run_watchdog(sup.snapshot, WatchdogSettings(notify_socket=None, interval_s=0.5))


def test_status_line_names_what_is_down() -> None:
    async def main() -> str:
        async def bad(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            raise OSError("no camera")

        async def good(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            await trio.sleep_forever()

        sup = Supervisor(
            "root",
            [ChildSpec(name="web", factory=good, critical=True), ChildSpec(name="capture", factory=bad)],
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.1)
            line = status_line(sup.snapshot())
            nursery.cancel_scope.cancel()
        return line

    line = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert line.startswith("degraded (1/2 up); down: capture backoff")


def test_pets_stop_while_the_loop_is_blocked(notify: tuple[socket.socket, str]) -> None:
    """Real clock: a blocked trio loop sends nothing, because the pet comes from a trio task."""
    sock, path = notify
    sock.setblocking(True)
    stamps: list[tuple[float, str]] = []
    done = threading.Event()

    def reader() -> None:
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                msg = sock.recv(4096).decode()
            except TimeoutError:
                continue
            stamps.append((time.monotonic(), msg))

    t = threading.Thread(target=reader)
    t.start()
    blocked: list[float] = []

    async def main() -> None:
        async def up(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            await trio.sleep_forever()

        sup = Supervisor("root", [ChildSpec(name="web", factory=up, critical=True)])
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await nursery.start(
                partial(run_watchdog, sup.snapshot, WatchdogSettings(notify_socket=path, interval_s=0.02))
            )
            await trio.sleep(0.3)
            blocked.append(time.monotonic())
            time.sleep(0.6)  # noqa: ASYNC251 -- a blocking call on the loop thread: the bug this guards against
            blocked.append(time.monotonic())
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        done.set()
        t.join()
    pet_times = [ts for ts, m in stamps if "WATCHDOG=1" in m]
    start, end = blocked
    assert [ts for ts in pet_times if ts < start], "petted before the block"
    assert not [ts for ts in pet_times if start + 0.05 < ts < end], "no pets while the loop is blocked"
    assert [ts for ts in pet_times if ts > end + 0.02], "pets resume after the block"


def test_status_line_walks_nested_supervisors() -> None:
    from appliance.supervisor import DynamicSupervisor

    async def main() -> str:
        async def up(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            await trio.sleep_forever()

        async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            raise ConnectionResetError("ingest hung up")

        egress = DynamicSupervisor("egress")
        sup = Supervisor("root", [ChildSpec(name="web", factory=up, critical=True), egress.as_child()])
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await egress.start_child(ChildSpec(name="push-yt", factory=flaky))
            await trio.sleep(0.1)
            line = status_line(sup.snapshot())
            nursery.cancel_scope.cancel()
        return line

    line = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert line == "degraded (2/3 up); down: egress/push-yt backoff"
