"""The machine's vital signs: procfs parsers against text captured from real machines, and the sampler
turning two readings into CPU use and network rates (over a fixture /proc and /sys, with a fake clock)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.hw.sysinfo import (
    CpuTimes,
    NetCounters,
    SystemSampler,
    cpu_percent,
    dir_bytes,
    disk_usage,
    interface_ipv4,
    parse_if_inet6,
    parse_loadavg,
    parse_meminfo,
    parse_net_dev,
    parse_proc_stat,
    parse_route_default,
    parse_uptime,
    rate_per_s,
)

# A 2-CPU x86_64 VM (kernel 6.x): ten fields per cpu line.
PROC_STAT_X86 = """\
cpu  524873 944 57027 2948764 3891 0 3375 111 0 0
cpu0 159008 464 21511 1585823 393 0 1685 47 0 0
cpu1 365864 479 35516 1362940 3498 0 1689 63 0 0
intr 118227465 0 9 0 0 0 0 3 0 0 0 0 0 15 0 0 0
ctxt 227371046
btime 1763797412
processes 455120
procs_running 2
procs_blocked 0
softirq 55375520 3 10588286 3 11075426 0 0 3071 17617019 0 16091712
"""

# A Raspberry Pi 4 (4 cores).
PROC_STAT_PI = """\
cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0
cpu0 1393840 29942 412624 11865048 3780 0 18012 0 0 0
cpu1 3078420 87263 858961 10486412 4279 0 2498 0 0 0
cpu2 2802329 88453 876389 10682380 4337 0 2394 0 0 0
cpu3 2857564 85038 936745 13794643 4287 0 2291 0 0 0
intr 524512346 0 0 0 0 0 0 0 0 0 0 0 0 0 0
"""

# A 2.6 kernel: only user nice system idle iowait irq softirq.
PROC_STAT_OLD = "cpu  100 0 50 800 50 0 0\ncpu0 100 0 50 800 50 0 0\n"

MEMINFO = """\
MemTotal:       24683656 kB
MemFree:        22954380 kB
MemAvailable:   23925236 kB
Buffers:            6988 kB
Cached:          1121368 kB
SwapCached:            0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""

MEMINFO_PRE_3_14 = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n"

# Captured on the x86_64 VM, runs of spaces shortened (the parser splits on any whitespace).
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier
    lo: 38786783219 5426435 0 0 0 0 0 0 38786783219 5426435 0 0 0 0 0 0
  eth0: 881419748   33124    0    0    0     0          0         0  2399492   23587    0    0    0    0  0  0
wlan0:1234 5 0 0 0 0 0 0 5678 6 0 0 0 0 0 0
"""

IF_INET6 = """\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
2001 not a line
"""

ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
wwan0\t00000000\t0100A8C0\t0003\t0\t0\t700\t00000000\t0\t0\t0
"""


def test_proc_stat_aggregate_line_and_cpu_count() -> None:
    x86 = parse_proc_stat(PROC_STAT_X86)
    assert x86.cpus == 2
    assert x86.total == 524873 + 944 + 57027 + 2948764 + 3891 + 0 + 3375 + 111
    assert x86.busy == x86.total - (2948764 + 3891)  # idle + iowait
    assert parse_proc_stat(PROC_STAT_PI).cpus == 4
    old = parse_proc_stat(PROC_STAT_OLD)
    assert (old.busy, old.total, old.cpus) == (150, 1000, 1)
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        parse_proc_stat("cpu0 1 2 3 4\n")


def test_cpu_percent_between_readings() -> None:
    before = CpuTimes(busy=100, total=1000, cpus=2)
    assert cpu_percent(before, CpuTimes(busy=150, total=1200, cpus=2)) == 25.0
    assert cpu_percent(before, CpuTimes(busy=300, total=1200, cpus=2)) == 100.0
    assert cpu_percent(before, before) is None  # no time passed
    assert cpu_percent(before, CpuTimes(busy=50, total=1100, cpus=2)) is None  # counters went back


def test_meminfo_available_and_its_old_kernel_estimate() -> None:
    mem = parse_meminfo(MEMINFO)
    assert mem.total_bytes == 24683656 * 1024 and mem.available_bytes == 23925236 * 1024
    assert mem.to_dict()["used_bytes"] == (24683656 - 23925236) * 1024
    assert mem.to_dict()["percent"] == 3.1
    old = parse_meminfo(MEMINFO_PRE_3_14)
    assert old.available_bytes == 400 * 1024 and old.used_bytes == 600 * 1024
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo("MemFree: 1 kB\n")


def test_loadavg_and_uptime() -> None:
    assert parse_loadavg("0.55 0.93 0.74 1/84 11477\n") == (0.55, 0.93, 0.74)
    assert parse_uptime("17750.22 29487.64\n") == 17750.22
    for bad in ("", "0.5"):
        with pytest.raises(ValueError):
            parse_loadavg(bad)
    with pytest.raises(ValueError):
        parse_uptime("")


def test_net_dev_counters_skip_headers() -> None:
    assert parse_net_dev(NET_DEV) == {
        "lo": NetCounters(38786783219, 38786783219),
        "eth0": NetCounters(881419748, 2399492),
        "wlan0": NetCounters(1234, 5678),  # no space after the colon (long names, old kernels)
    }


def test_if_inet6_addresses_with_prefix_and_scope() -> None:
    assert parse_if_inet6(IF_INET6) == {
        "eth0": [("fe80::fc:ff:fe00:1", 64, "link"), ("fd00::2", 64, "global")],
        "lo": [("::1", 128, "host")],
    }


def test_default_route_lowest_metric() -> None:
    assert parse_route_default(ROUTE) == ("eth0", "192.0.2.1")
    only_modem = ROUTE.splitlines()[0] + "\n" + ROUTE.splitlines()[3]
    assert parse_route_default(only_modem) == ("wwan0", "192.168.0.1")
    assert parse_route_default(ROUTE.splitlines()[0] + "\n") is None


def test_rate_per_s() -> None:
    assert rate_per_s(1000, 3000, 2.0) == 1000.0
    assert rate_per_s(3000, 1000, 2.0) is None  # interface re-created: counters reset
    assert rate_per_s(1000, 3000, 0.0) is None


def test_disk_usage_of_a_directory_not_made_yet(tmp_path: Path) -> None:
    usage = disk_usage(tmp_path / "recordings" / "not-yet")
    st = os.statvfs(tmp_path)
    assert usage.total_bytes == st.f_blocks * st.f_frsize > 0
    assert 0 <= usage.free_bytes <= usage.total_bytes and 0 <= usage.used_bytes <= usage.total_bytes
    assert usage.path == str(tmp_path / "recordings" / "not-yet")


def test_dir_bytes_counts_files_not_symlinks(tmp_path: Path) -> None:
    (tmp_path / "live" / "cam").mkdir(parents=True)
    (tmp_path / "live" / "cam" / "a.flv").write_bytes(b"x" * 1000)
    (tmp_path / "b.flv").write_bytes(b"y" * 24)
    (tmp_path / "link.flv").symlink_to(tmp_path / "b.flv")
    assert dir_bytes(tmp_path) == 1024
    assert dir_bytes(tmp_path / "missing") == 0
    assert dir_bytes(tmp_path, max_entries=2) is None  # too many to count each second


def test_loopback_has_its_ipv4_address() -> None:
    assert interface_ipv4("lo") == ("127.0.0.1", 8)
    assert interface_ipv4("no-such-if0") is None


def _fixture_root(root: Path, stat: str, net_dev: str) -> None:
    (root / "proc/net").mkdir(parents=True, exist_ok=True)
    (root / "proc/stat").write_text(stat)
    (root / "proc/net/dev").write_text(net_dev)
    (root / "proc/meminfo").write_text(MEMINFO)
    (root / "proc/loadavg").write_text("0.50 0.40 0.30 1/84 11477\n")
    (root / "proc/uptime").write_text("100.00 150.00\n")
    (root / "proc/net/if_inet6").write_text(IF_INET6)
    (root / "proc/net/route").write_text(ROUTE)
    for name, state, mac in (("eth0", "up", "dc:a6:32:01:02:03"), ("lo", "unknown", "00:00:00:00:00:00")):
        (root / "sys/class/net" / name).mkdir(parents=True, exist_ok=True)
        (root / "sys/class/net" / name / "operstate").write_text(state + "\n")
        (root / "sys/class/net" / name / "address").write_text(mac + "\n")


def test_sampler_turns_two_readings_into_rates(tmp_path: Path) -> None:
    root = tmp_path / "root"
    rec = tmp_path / "recordings"
    rec.mkdir()
    (rec / "a.flv").write_bytes(b"z" * 500)
    head = "Inter-|\n face |\n"
    lo = "    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"
    net0 = head + "  eth0: 1000 1 0 0 0 0 0 0 2000 1 0 0 0 0 0 0\n" + lo
    net1 = head + "  eth0: 3000 1 0 0 0 0 0 0 2500 1 0 0 0 0 0 0\n" + lo
    _fixture_root(root, "cpu  100 0 0 900 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\n", net0)
    now = [10.0]
    sampler = SystemSampler(
        lambda: rec,
        clock=lambda: now[0],
        root=root,
        dir_every_s=10.0,
        ipv4_of=lambda name: ("192.0.2.2", 24) if name == "eth0" else None,
    )
    _fixture_root(root, "cpu  200 0 0 1100 0 0 0 0\ncpu0 200 0 0 1100 0 0 0 0\n", net1)
    now[0] = 12.0
    s = sampler.sample()
    assert s["cpu_percent"] == pytest.approx(100 * 100 / 300, abs=0.1) and s["cpus"] == 1
    assert s["load"] == (0.5, 0.4, 0.3) and s["uptime_s"] == 100.0
    assert s["memory"]["total_bytes"] == 24683656 * 1024
    assert s["temperature_c"] is None and s["throttling"] is None
    assert s["disk"]["recordings_bytes"] == 500
    eth0, lo = s["network"]  # loopback last
    assert eth0["name"] == "eth0" and lo["name"] == "lo"
    assert eth0["state"] == "up" and eth0["mac"] == "dc:a6:32:01:02:03"
    assert eth0["default_gateway"] == "192.0.2.1" and lo["default_gateway"] is None
    assert eth0["addresses"] == [
        {"family": "ipv4", "address": "192.0.2.2", "prefix": 24, "scope": None},
        {"family": "ipv6", "address": "fe80::fc:ff:fe00:1", "prefix": 64, "scope": "link"},
        {"family": "ipv6", "address": "fd00::2", "prefix": 64, "scope": "global"},
    ]
    assert (eth0["rx_bps"], eth0["tx_bps"]) == (2000 * 8 // 2, 500 * 8 // 2)
    # The directory walk waits dir_every_s; the next reading keeps the last count.
    (rec / "b.flv").write_bytes(b"z" * 100)
    now[0] = 13.0
    assert sampler.sample()["disk"]["recordings_bytes"] == 500
    now[0] = 23.0
    again = sampler.sample()
    assert again["disk"]["recordings_bytes"] == 600
    assert again["cpu_percent"] is None  # /proc/stat did not move: no time to measure over


def test_sampler_with_nothing_readable(tmp_path: Path) -> None:
    sampler = SystemSampler(
        lambda: tmp_path, clock=lambda: 0.0, root=tmp_path / "empty", ipv4_of=lambda _: None
    )
    s = sampler.sample()
    assert s["cpu_percent"] is None and s["load"] is None and s["memory"] is None and s["uptime_s"] is None
    assert s["network"] == [] and s["disk"]["total_bytes"] > 0
