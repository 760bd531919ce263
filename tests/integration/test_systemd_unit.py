"""systemd/appliance.service passes `systemd-analyze verify` (pointed at this checkout's environment)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.peers import require_command

TOP = Path(__file__).resolve().parents[2]


def unit_text() -> str:
    return (TOP / "systemd/appliance.service").read_text()


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = require_command("systemd-analyze")
    # verify needs ExecStart's binary to exist: point a copy at the interpreter's own `appliance`.
    exe = shutil.which("appliance", path=str(Path(sys.executable).parent))
    assert exe, "the appliance entry point is not installed in this environment"
    lines = [
        f"ExecStart={exe} run --config /etc/appliance/appliance.toml" if ln.startswith("ExecStart=") else ln
        for ln in unit_text().splitlines()
    ]
    unit = tmp_path / "appliance.service"
    unit.write_text("\n".join(lines) + "\n")
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify also reports unrelated units of this machine; only lines about our unit count.
    ours = [ln for ln in (res.stdout + res.stderr).splitlines() if "appliance.service" in ln]
    assert res.returncode == 0 and not ours, res.stdout + res.stderr


def test_unit_has_the_contract() -> None:
    text = unit_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=appliance",
    ):
        assert line in text.splitlines(), line


def test_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = require_command("systemd-analyze")
    # `systemd-analyze security --offline` scores a unit file without loading it (systemd >= 250).
    res = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=50", str(TOP / "systemd/appliance.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Overall exposure level" in res.stdout, res.stdout + res.stderr
    score = float(res.stdout.split("Overall exposure level for appliance.service:")[1].split()[0])
    assert score <= 5.0, res.stdout[-2000:]
    assert res.returncode == 0
