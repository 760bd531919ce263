"""The ``appliance`` command: run | check-config | status | probe | controller | passwd | version."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.config import DEFAULT_PATH, Config, ConfigError, describe, load_file

__all__ = ["main"]

EXIT_USAGE = 2


def _config_path(arg: str | None) -> Path | None:
    """--config, else $APPLIANCE_CONFIG, else /etc/appliance/appliance.toml when it exists, else none."""
    if arg:
        return Path(arg)
    env = os.environ.get("APPLIANCE_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None


def _load(args: argparse.Namespace) -> tuple[Config, Path | None]:
    path = _config_path(getattr(args, "config", None))
    return load_file(path, args.set or ()), path


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from appliance import log as applog
    from appliance.app import Appliance

    cfg, path = _load(args)
    applog.setup(cfg.log.format, cfg.log.level)
    return trio.run(Appliance(cfg, config_path=path, overrides=args.set or ()).run)


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.list:
        for key, default, doc in describe():
            print(f"{key:28} {default:22} {doc}")
        return 0
    if not args.file:
        print("check-config: give a FILE (or --list)", file=sys.stderr)
        return EXIT_USAGE
    load_file(Path(args.file), args.set or ())
    print(f"{args.file}: ok")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    import getpass

    from appliance.web.auth import hash_password
    from appliance.web.passwd_file import set_password_hash

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New web password: ")
        if getpass.getpass("Again: ") != password:
            print("passwd: the two passwords differ; nothing changed", file=sys.stderr)
            return 1
    try:
        encoded = hash_password(password)
    except ValueError as e:
        print(f"passwd: {e}; nothing changed", file=sys.stderr)
        return 1
    if not args.config:
        print("# under [web] in the appliance's config file:")
        print(f'password_hash = "{encoded}"')
        return 0
    try:
        set_password_hash(Path(args.config), encoded)
    except (OSError, ValueError) as e:
        print(f"passwd: {args.config}: {e}; nothing changed", file=sys.stderr)
        return 1
    print(f"{args.config}: web.password_hash set; apply it with `systemctl reload appliance` (SIGHUP)")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"appliance {__version__}")
    return 0


def _default_status_url() -> str:
    try:
        cfg = load_file(_config_path(None))
    except ConfigError:
        cfg = Config()
    host = cfg.web.listen.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.web.listen.port}"


def cmd_status(args: argparse.Namespace) -> int:
    base = (args.url or _default_status_url()).rstrip("/")
    url = base if base.endswith("/api/status") else base + "/api/status"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            doc: dict[str, Any] = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        print(f"status: cannot read {url}: {reason}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print(
            f"appliance {doc.get('version')} on {doc.get('device')}, up {doc.get('uptime_s', 0):.0f}s, "
            f"{'healthy' if doc.get('healthy') else 'UNHEALTHY'}"
        )
        _print_children(doc.get("supervisor", {}), indent="  ")
    return 0 if doc.get("healthy") else 1


def _print_children(sup: dict[str, Any], indent: str) -> None:
    for child in sup.get("children", []):
        flags = " critical" if child.get("critical") else ""
        line = f"{indent}{child['name']:<14} {child['state']:<10} restarts={child.get('restarts', 0)}{flags}"
        if child.get("last_error"):
            line += f"  last error: {child['last_error']}"
        print(line)
        if child.get("children"):
            _print_children(child["children"], indent + "  ")


def cmd_probe(args: argparse.Namespace) -> int:
    from appliance.hw import encoders, libcamera, v4l2
    from appliance.hw.board import probe_board
    from appliance.media.capture.devices import rpicam_command

    cfg, _path = _load(args)
    board = probe_board()
    print("board:")
    for key, value in board.items():
        print(f"  {key}: {value}")
    wish = v4l2.Wish(width=cfg.capture.width, height=cfg.capture.height, fps=float(cfg.capture.fps))
    print(f"cameras (V4L2; wish {wish.width}x{wish.height}@{wish.fps:g} from capture.width/height/fps):")
    nodes: list[v4l2.VideoNode] = []
    for path in v4l2.list_video_paths():
        try:
            nodes.append(v4l2.query_node(path))
        except v4l2.V4l2Error as e:
            print(f"  {path}: cannot query: {e}")
    found = v4l2.survey(nodes, wish)
    for node, choice in found.usable:
        print(f"  {node.path}: {node.card} ({node.driver}, {node.bus_info})")
        for fmt in node.formats:
            sizes = ", ".join(f"{s.width}x{s.height}@{max(s.fps, default=0):g}" for s in fmt.sizes[:6])
            more = f" (+{len(fmt.sizes) - 6} more)" if len(fmt.sizes) > 6 else ""
            print(f"    {fmt.fourcc:<5} {fmt.description}: {sizes}{more}")
        print(f"    would use: {choice.reason}")
    for skipped in found.skipped:
        print(f"  {skipped.path}: skipped: {skipped.reason}")
    if not nodes:
        print("  none (no /dev/video*)")
    command = rpicam_command(cfg.capture.rpicam_command)
    print("cameras (libcamera):")
    if command is None:
        print(f"  {cfg.capture.rpicam_command} not installed")
    else:
        try:
            run = subprocess.run([command, "--list-cameras"], capture_output=True, text=True, timeout=15)
            cameras = libcamera.parse_list_cameras(run.stdout + run.stderr)
        except (OSError, subprocess.TimeoutExpired, ValueError) as e:
            print(f"  {command} --list-cameras failed: {e}")
            cameras = []
        for cam in cameras:
            modes = ", ".join(f"{m.width}x{m.height}@{m.fps or 0:g}" for m in cam.modes)
            print(f"  {cam.index}: {cam.sensor} {cam.path} modes: {modes}")
        if command and not cameras:
            print("  none")
    print(f"encoders (capture.encoder = {cfg.capture.encoder}):")
    picked = encoders.probe_encoders(board, prefer=cfg.capture.encoder)
    for probe in picked.probes:
        kind = "hardware" if probe.hardware else "software"
        state = "available" if probe.available else "unavailable"
        print(f"  {probe.name:<14} {kind:<8} {state}: {probe.reason}")
    print(f"  chosen: {picked.name}: {picked.reason}")
    return 0


def cmd_controller(args: argparse.Namespace) -> int:
    import trio

    from appliance import log as applog
    from appliance.cloud.controller import run_controller, settings_from

    try:
        settings = settings_from(args, os.environ)
    except ValueError as e:
        print(f"controller: {e}", file=sys.stderr)
        return EXIT_USAGE
    applog.setup(args.log_format, "info")
    return trio.run(run_controller, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Edge streaming appliance.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            action="append",
            metavar="SECTION.KEY=VALUE",
            help="override one config value (repeatable), validated like the file",
        )

    p = sub.add_parser("run", help="run the appliance")
    p.add_argument("--config", metavar="FILE", help=f"TOML config (default {DEFAULT_PATH} when present)")
    with_config(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file (exit 2 naming the bad key)")
    p.add_argument("file", nargs="?", metavar="FILE")
    p.add_argument("--list", action="store_true", help="list every key with its default")
    with_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("status", help="show the state of a running appliance (its JSON API)")
    p.add_argument("--url", help="base URL of the appliance (default: this machine's web.listen)")
    p.add_argument("--json", action="store_true", help="print the raw /api/status document")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("probe", help="print the board, cameras (with formats) and the encoder chosen")
    p.add_argument("--config", metavar="FILE", help="TOML config (its [capture] wishes)")
    with_config(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser(
        "controller",
        help="run the reference fleet controller (devices connect to it; JSON API; managed RTMP ingest)",
        description="Tokens come from the environment, not the command line (ps shows arguments): "
        "APPLIANCE_CONTROLLER_DEVICE_TOKENS='DEVICE=TOKEN,...' (or one TOKEN for any device) or "
        "--device-tokens FILE (lines 'DEVICE TOKEN', '* TOKEN' for any device), and "
        "APPLIANCE_CONTROLLER_API_TOKEN for the operator API.",
    )
    p.add_argument("--listen", default="127.0.0.1:8700", help="HTTP API and the devices' ws:///device")
    p.add_argument("--rtmp-listen", default="127.0.0.1:1936", help='managed ingest relay, or "off"')
    p.add_argument("--public-host", default="", help="host in the RTMP URLs handed out")
    p.add_argument("--device-tokens", metavar="FILE", help="device tokens, one 'DEVICE TOKEN' per line")
    p.add_argument("--keepalive", default="15s", help="keep-alive period")
    p.add_argument("--ack-timeout", default="10s", help="an unanswered keep-alive is missed after this")
    p.add_argument("--max-missed", type=int, default=3, help="missed keep-alives in a row -> timeout")
    p.add_argument("--stop-timeout", default="10s", help="wait this long for a device to confirm a stop")
    p.add_argument("--log-format", choices=("auto", "logfmt", "json"), default="auto")
    p.set_defaults(func=cmd_controller)

    p = sub.add_parser(
        "passwd",
        help="set the web password: print the web.password_hash line, or write it into --config",
    )
    p.add_argument(
        "--config", metavar="FILE", help="write web.password_hash into this TOML file (kept otherwise)"
    )
    p.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    p.set_defaults(func=cmd_passwd)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
