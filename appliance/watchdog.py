"""systemd integration: READY, WATCHDOG pets gated on health, STATUS, STOPPING (sd_notify(3)).

Theory of operation: systemd (Type=notify, WatchdogSec=N) hands us NOTIFY_SOCKET and WATCHDOG_USEC.
We send READY=1 once every critical child of the supervision tree has become ready, then, every
WATCHDOG_USEC/2, WATCHDOG=1 *only while the tree is healthy*. If a critical child stays down past its
grace, or the trio loop itself is stuck (the pet is sent from a trio task, so a blocked loop sends
nothing), the pets stop and systemd kills and restarts the whole process: the last line of self-healing
after the supervisor's own restarts. STATUS=... carries a one-line summary for ``systemctl status``.
STOPPING=1 goes out when we are cancelled. With NOTIFY_SOCKET unset nothing at all is sent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sdnotify
import trio

from appliance.supervisor import ChildState, SupervisorSnapshot

__all__ = ["Notifier", "WatchdogSettings", "WatchdogStats", "run_watchdog", "status_line"]

log = logging.getLogger("appliance.watchdog")

# How often STATUS is refreshed when systemd asked for no watchdog.
_STATUS_INTERVAL_S = 5.0
_READY_POLL_S = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchdogSettings:
    """What systemd asked for, read from the environment it gave us."""

    notify_socket: str | None
    interval_s: float | None  # half of WATCHDOG_USEC, None when no watchdog was asked for

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> WatchdogSettings:
        env = os.environ if env is None else env
        sock = env.get("NOTIFY_SOCKET") or None
        interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        owner = env.get("WATCHDOG_PID", "")
        # sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be us; otherwise the pets are for a parent.
        if usec.isdigit() and int(usec) > 0 and (not owner or owner == str(pid or os.getpid())):
            interval = int(usec) / 1_000_000 / 2
        return cls(notify_socket=sock, interval_s=interval)


@dataclass(slots=True, kw_only=True)
class WatchdogStats:
    """What the watchdog did, for /metrics. Written by `run_watchdog` only, on the trio thread."""

    enabled: bool = False  # systemd asked for pets (NOTIFY_SOCKET and WATCHDOG_USEC set)
    ready_sent: bool = False
    pets: int = 0  # WATCHDOG=1 datagrams sent
    withheld: int = 0  # ticks on which a pet was due but the tree was unhealthy


class Notifier:
    """A datagram sender to NOTIFY_SOCKET that never blocks the loop and never raises.

    Built on the sdnotify package; errors are logged once per kind rather than swallowed silently.
    """

    def __init__(self, notify_socket: str | None) -> None:
        self._notifier: sdnotify.SystemdNotifier | None = None
        self._errors: set[str] = set()
        if not notify_socket:
            return
        saved = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = notify_socket
        try:
            self._notifier = sdnotify.SystemdNotifier(debug=True)
            self._notifier.socket.setblocking(False)
        except OSError as e:
            log.error("watchdog.socket_failed socket=%s error=%r", notify_socket, str(e))
            self._notifier = None
        finally:
            if saved is None:
                os.environ.pop("NOTIFY_SOCKET", None)
            else:
                os.environ["NOTIFY_SOCKET"] = saved

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def send(self, *lines: str) -> bool:
        if self._notifier is None:
            return False
        try:
            self._notifier.notify("\n".join(lines))
        except OSError as e:
            kind = type(e).__name__
            if kind not in self._errors:
                self._errors.add(kind)
                log.warning("watchdog.notify_failed error=%r", str(e))
            return False
        return True

    def close(self) -> None:
        if self._notifier is not None and self._notifier.socket is not None:
            self._notifier.socket.close()
        self._notifier = None


def status_line(snap: SupervisorSnapshot) -> str:
    """One line for STATUS= and logs: overall state, then what is not running and why."""
    down = []
    total = 0
    for path, child in snap.walk():
        total += 1
        if child.state is not ChildState.RUNNING or not child.ready:
            # No countdowns here: STATUS= is only sent when this line changes, so it must not tick.
            what = child.state.name.lower()
            if child.restarts:
                what += f" after {child.restarts} restarts"
            down.append(f"{path} {what}")
    if snap.escalated:
        head = f"failed: {snap.escalated}"
    elif not snap.healthy:
        head = "unhealthy: " + ", ".join(snap.failing())
    elif down:
        head = "degraded"
    else:
        head = "ok"
    tail = f"; down: {', '.join(down)}" if down else ""
    return f"{head} ({total - len(down)}/{total} up){tail}"


async def run_watchdog(
    snapshot: Callable[[], SupervisorSnapshot],
    settings: WatchdogSettings | None = None,
    *,
    stats: WatchdogStats | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Tell systemd how we are, until cancelled; then STOPPING=1.

    Args:
        snapshot: returns the supervision tree's current state.
        settings: what systemd asked for (default: read from the environment).
        stats: counters to keep up to date (pets sent, pets withheld), for /metrics.
    """
    settings = settings or WatchdogSettings.from_env()
    stats = stats if stats is not None else WatchdogStats()
    notifier = Notifier(settings.notify_socket)
    stats.enabled = notifier.enabled and settings.interval_s is not None
    task_status.started()
    if not notifier.enabled:
        log.info("watchdog.off reason=%r", "NOTIFY_SOCKET unset")
        await trio.sleep_forever()
    tick = settings.interval_s or _STATUS_INTERVAL_S
    log.info("watchdog.on socket=%s pet_every_s=%s", settings.notify_socket, settings.interval_s)
    ready_sent = False
    was_healthy = True
    last_status = ""
    try:
        while True:
            snap = snapshot()
            lines: list[str] = []
            if not ready_sent and snap.all_ready():
                lines.append("READY=1")
                ready_sent = True
                log.info("watchdog.ready")
            status = status_line(snap)
            if status != last_status:
                lines.append(f"STATUS={status}")
                last_status = status
            healthy = snap.healthy and ready_sent
            pet = healthy and settings.interval_s is not None
            if pet:
                lines.append("WATCHDOG=1")
            elif settings.interval_s is not None and ready_sent:
                stats.withheld += 1
            if healthy != was_healthy and ready_sent:
                if healthy:
                    log.info("watchdog.pets_resumed status=%r", status)
                else:
                    log.error("watchdog.pets_withheld status=%r", status)
                was_healthy = healthy
            if lines and notifier.send(*lines) and pet:
                stats.pets += 1
            stats.ready_sent = ready_sent
            # Until READY=1 is out, look often: systemd holds `systemctl start` until then.
            await trio.sleep(tick if ready_sent else _READY_POLL_S)
    finally:
        # Sent from a finally on cancellation: a datagram send does not block, so no shield is needed.
        notifier.send("STOPPING=1", "STATUS=stopping")
        notifier.close()
