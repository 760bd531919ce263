"""The machine's vital signs for the status page: CPU use, memory, load, disk, network interfaces.

Theory of operation
-------------------
Linux says all of this in text files under ``/proc`` and ``/sys``; the parsers here (``parse_*``) are pure
functions of that text, so they are tested against text captured from real machines. CPU use and network
rates are differences between two readings: :class:`SystemSampler` keeps the previous reading and
turns each new one into percentages and bytes per second over the time in between. The sampler's
``sample`` does blocking reads (procfs, ``statvfs``, an ``ioctl`` per interface, a walk of the recordings
directory every ``dir_every_s``): run it in a worker thread.

IPv4 addresses come from the ``SIOCGIFADDR``/``SIOCGIFNETMASK`` ioctls (one address per interface: the
primary one); IPv6 addresses from ``/proc/net/if_inet6``. Temperature and throttling are ``None``
("not available") until the board-health subsystem reads them.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CpuTimes",
    "DiskUsage",
    "Memory",
    "NetCounters",
    "SystemSampler",
    "cpu_percent",
    "dir_bytes",
    "disk_usage",
    "interface_ipv4",
    "parse_if_inet6",
    "parse_loadavg",
    "parse_meminfo",
    "parse_net_dev",
    "parse_proc_stat",
    "parse_route_default",
    "parse_uptime",
    "rate_per_s",
]

# `ioctl` request numbers from <linux/sockios.h>; the answer is a struct ifreq whose sockaddr_in starts at
# byte 16 (after IFNAMSIZ), with the IPv4 address at 20..24.
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_IFNAMSIZ = 16


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat``: jiffies busy and in all, plus the CPU count."""

    busy: int
    total: int
    cpus: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """``/proc/meminfo`` in bytes; ``used`` is what applications hold (total less available)."""

    total_bytes: int
    available_bytes: int

    @property
    def used_bytes(self) -> int:
        return max(0, self.total_bytes - self.available_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_bytes": self.total_bytes,
            "available_bytes": self.available_bytes,
            "used_bytes": self.used_bytes,
            "percent": round(100.0 * self.used_bytes / self.total_bytes, 1) if self.total_bytes else None,
        }


@dataclass(frozen=True, slots=True)
class NetCounters:
    """One interface's byte counters from ``/proc/net/dev``."""

    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskUsage:
    """A file system's size as an unprivileged process sees it (``f_bavail``: root's reserve excluded)."""

    path: str
    total_bytes: int
    free_bytes: int
    used_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "used_bytes": self.used_bytes,
            "percent": round(100.0 * self.used_bytes / self.total_bytes, 1) if self.total_bytes else None,
        }


# -- pure parsers ------------------------------------------------------------------------------------


def parse_proc_stat(text: str) -> CpuTimes:
    """The ``cpu`` line of ``/proc/stat`` (proc(5)): user nice system idle iowait irq softirq steal ...

    Idle time is ``idle + iowait``; guest time is already inside user and nice, so it is not added again.

    Raises:
        ValueError: no aggregate ``cpu`` line.
    """
    agg: list[int] | None = None
    cpus = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            agg = [int(v) for v in rest.split()]
        elif name.startswith("cpu") and name[3:].isdigit():
            cpus += 1
    if agg is None or len(agg) < 4:
        raise ValueError("/proc/stat: no aggregate cpu line")
    fields = agg[:8]  # user nice system idle iowait irq softirq steal (older kernels have fewer)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields)
    return CpuTimes(busy=total - idle, total=total, cpus=max(cpus, 1))


def cpu_percent(before: CpuTimes, after: CpuTimes) -> float | None:
    """Busy share of all CPUs between two readings, 0..100; None when no time passed (or a counter reset)."""
    total = after.total - before.total
    busy = after.busy - before.busy
    if total <= 0 or busy < 0:
        return None
    return round(min(100.0, 100.0 * busy / total), 1)


def parse_meminfo(text: str) -> Memory:
    """``MemTotal`` and ``MemAvailable`` (``MemFree + Buffers + Cached`` on kernels before 3.14).

    Raises:
        ValueError: no ``MemTotal``.
    """
    kib: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kib[key.strip()] = int(parts[0])
    if "MemTotal" not in kib:
        raise ValueError("/proc/meminfo: no MemTotal")
    available = kib.get("MemAvailable")
    if available is None:
        available = kib.get("MemFree", 0) + kib.get("Buffers", 0) + kib.get("Cached", 0)
    return Memory(total_bytes=kib["MemTotal"] * 1024, available_bytes=min(available, kib["MemTotal"]) * 1024)


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages of ``/proc/loadavg``.

    Raises:
        ValueError: not three numbers first.
    """
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(f"/proc/loadavg: {text!r}")
    return float(parts[0]), float(parts[1]), float(parts[2])


def parse_uptime(text: str) -> float:
    """Seconds since boot, the first number of ``/proc/uptime``.

    Raises:
        ValueError: not a number.
    """
    parts = text.split()
    if not parts:
        raise ValueError("/proc/uptime: empty")
    return float(parts[0])


def parse_net_dev(text: str) -> dict[str, NetCounters]:
    """Each interface's received and sent bytes from ``/proc/net/dev`` (two header lines, then
    ``name: rx_bytes rx_packets ... (8 receive fields) tx_bytes ...``)."""
    out: dict[str, NetCounters] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 9 or not fields[0].isdigit():
            continue  # the headers ("Inter-|", " face |bytes ...") and anything unexpected
        out[name.strip()] = NetCounters(rx_bytes=int(fields[0]), tx_bytes=int(fields[8]))
    return out


def parse_if_inet6(text: str) -> dict[str, list[tuple[str, int, str]]]:
    """IPv6 addresses per interface from ``/proc/net/if_inet6``: (address, prefix length, scope).

    Each line is ``ADDRESS(32 hex) IFINDEX PREFIXLEN SCOPE FLAGS NAME`` in hex; scope 0x00 is global,
    0x10 host (loopback), 0x20 link, 0x40 site (RFC 4291 section 2.5.6, deprecated but still reported).
    """
    scopes = {0x00: "global", 0x10: "host", 0x20: "link", 0x40: "site"}
    out: dict[str, list[tuple[str, int, str]]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or len(parts[0]) != 32:
            continue
        try:
            addr = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
            prefix, scope = int(parts[2], 16), int(parts[3], 16)
        except ValueError:
            continue
        out.setdefault(parts[5], []).append((str(addr), prefix, scopes.get(scope & 0xF0, "other")))
    return out


def parse_route_default(text: str) -> tuple[str, str] | None:
    """The IPv4 default route from ``/proc/net/route``: (interface, gateway), or None without one.

    Addresses there are hex in the kernel's byte order (little-endian on every board we run on).
    """
    best: tuple[int, str, str] | None = None
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 8 or parts[1] != "00000000" or parts[7] != "00000000":
            continue
        try:
            gateway = str(ipaddress.IPv4Address(struct.pack("<I", int(parts[2], 16))))
            metric = int(parts[6])
        except ValueError:
            continue
        if best is None or metric < best[0]:
            best = (metric, parts[0], gateway)
    return None if best is None else (best[1], best[2])


def rate_per_s(before: int, after: int, seconds: float) -> float | None:
    """A counter's rate; None when no time passed or the counter went back (interface re-created)."""
    if seconds <= 0 or after < before:
        return None
    return (after - before) / seconds


# -- readers (blocking) ------------------------------------------------------------------------------


def disk_usage(path: Path) -> DiskUsage:
    """``statvfs`` of the file system holding ``path``, or of its nearest existing parent (the recordings
    directory is made by the first recording).

    Raises:
        OSError: not even ``/`` can be read.
    """
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return DiskUsage(path=str(path), total_bytes=total, free_bytes=free, used_bytes=used)


def dir_bytes(path: Path, *, max_entries: int = 100_000) -> int | None:
    """Bytes in the regular files under ``path`` (symlinks not followed); None if it can't be read or
    has more than ``max_entries`` entries (then it would cost too much to count every time)."""
    total = 0
    seen = 0
    stack = [path]
    try:
        while stack:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    seen += 1
                    if seen > max_entries:
                        return None
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return total if path.exists() else 0
    except OSError:
        return None
    return total


def interface_ipv4(name: str) -> tuple[str, int] | None:
    """The interface's primary IPv4 address and prefix length, or None when it has none."""
    req = struct.pack("256s", name.encode()[: _IFNAMSIZ - 1])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            addr = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, req)[20:24]
            mask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, req)[20:24]
    except OSError as e:
        if e.errno in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP):
            return None
        raise
    prefix = bin(int.from_bytes(mask, "big")).count("1")
    return socket.inet_ntoa(addr), prefix


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


@dataclass(slots=True)
class _Previous:
    at: float
    cpu: CpuTimes | None
    net: dict[str, NetCounters] = field(default_factory=dict)


class SystemSampler:
    """Reads the machine's vital signs; keeps the previous reading to turn counters into rates.

    Not thread-safe: one caller at a time (the status feed calls it from one worker thread at a time).

    Args:
        disk_path: Whose file system's use to report (the recordings directory).
        clock: Monotonic seconds (injected for tests).
        root: Where ``proc`` and ``sys`` are (a fixture tree in tests).
        dir_every_s: How often to count the bytes under ``disk_path`` (a walk of the directory).
        ipv4_of: An interface's IPv4 address and prefix length (the kernel's, by default).
    """

    def __init__(
        self,
        disk_path: Callable[[], Path],
        *,
        clock: Callable[[], float],
        root: Path = Path("/"),
        dir_every_s: float = 10.0,
        ipv4_of: Callable[[str], tuple[str, int] | None] = interface_ipv4,
    ) -> None:
        self._ipv4_of = ipv4_of
        self._disk_path = disk_path
        self._clock = clock
        self._root = root
        self._dir_every_s = dir_every_s
        self._dir_bytes: int | None = None
        self._dir_at: float | None = None
        # The first sample's CPU use is measured from here, so it is not a since-boot average.
        self._prev = _Previous(at=clock(), cpu=self._cpu(), net=self._net())

    def _cpu(self) -> CpuTimes | None:
        text = _read(self._root / "proc/stat")
        try:
            return parse_proc_stat(text) if text is not None else None
        except ValueError:
            return None

    def _net(self) -> dict[str, NetCounters]:
        text = _read(self._root / "proc/net/dev")
        return parse_net_dev(text) if text is not None else {}

    def sample(self) -> dict[str, Any]:
        """One reading, JSON-ready: ``cpu_percent``, ``cpus``, ``load``, ``memory``, ``uptime_s`` (the
        machine's), ``disk`` (with ``recordings_bytes``), ``network`` (interfaces), ``temperature_c`` and
        ``throttling`` (None: not available yet). Anything unreadable is None, never an exception."""
        now = self._clock()
        cpu = self._cpu()
        net = self._net()
        prev, self._prev = self._prev, _Previous(at=now, cpu=cpu, net=net)
        elapsed = now - prev.at
        return {
            "cpu_percent": cpu_percent(prev.cpu, cpu) if cpu is not None and prev.cpu is not None else None,
            "cpus": cpu.cpus if cpu is not None else os.cpu_count(),
            "load": _parsed(parse_loadavg, _read(self._root / "proc/loadavg")),
            "memory": _to_dict(_parsed(parse_meminfo, _read(self._root / "proc/meminfo"))),
            "uptime_s": _parsed(parse_uptime, _read(self._root / "proc/uptime")),
            "temperature_c": None,  # the board-health subsystem reads these
            "throttling": None,
            "disk": self._disk(now),
            "network": self._interfaces(net, prev.net, elapsed),
        }

    def _disk(self, now: float) -> dict[str, Any] | None:
        path = self._disk_path()
        try:
            usage = disk_usage(path).to_dict()
        except OSError:
            return None
        if self._dir_at is None or now - self._dir_at >= self._dir_every_s:
            self._dir_bytes, self._dir_at = dir_bytes(path), now
        usage["recordings_bytes"] = self._dir_bytes
        return usage

    def _interfaces(
        self, net: Mapping[str, NetCounters], prev: Mapping[str, NetCounters], elapsed: float
    ) -> list[dict[str, Any]]:
        v6 = parse_if_inet6(_read(self._root / "proc/net/if_inet6") or "")
        default = parse_route_default(_read(self._root / "proc/net/route") or "")
        out = []
        for name in sorted(set(net) | set(v6), key=lambda n: (n == "lo", n)):
            sys_dir = self._root / "sys/class/net" / name
            addresses = []
            v4 = self._ipv4_of(name)
            if v4 is not None:
                addresses.append({"family": "ipv4", "address": v4[0], "prefix": v4[1], "scope": None})
            addresses.extend(
                {"family": "ipv6", "address": a, "prefix": p, "scope": s} for a, p, s in v6.get(name, [])
            )
            cur, old = net.get(name), prev.get(name)
            rx = rate_per_s(old.rx_bytes, cur.rx_bytes, elapsed) if cur and old else None
            tx = rate_per_s(old.tx_bytes, cur.tx_bytes, elapsed) if cur and old else None
            out.append(
                {
                    "name": name,
                    "state": (_read(sys_dir / "operstate") or "unknown").strip(),
                    "mac": (_read(sys_dir / "address") or "").strip() or None,
                    "addresses": addresses,
                    "default_gateway": default[1] if default is not None and default[0] == name else None,
                    "rx_bytes": cur.rx_bytes if cur else None,
                    "tx_bytes": cur.tx_bytes if cur else None,
                    "rx_bps": None if rx is None else round(rx * 8),
                    "tx_bps": None if tx is None else round(tx * 8),
                }
            )
        return out


def _parsed(parse: Callable[[str], Any], text: str | None) -> Any:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError:
        return None


def _to_dict(obj: Memory | None) -> dict[str, Any] | None:
    return None if obj is None else obj.to_dict()
