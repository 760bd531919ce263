"""The ``appliance`` command: run | check-config | status | probe | version."""

from __future__ import annotations

import argparse
import json
import os
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
    from appliance.hw.board import probe_board, probe_video_nodes

    board = probe_board()
    print("board:")
    for key, value in board.items():
        print(f"  {key}: {value}")
    print("cameras:")
    nodes = probe_video_nodes()
    if not nodes:
        print("  none found (no /dev/video*); capture.source=auto uses the synthetic camera")
    for node in nodes:
        print(f"  {node['device']}: {node['name']}")
    print("  formats: not implemented yet (camera capture issue)")
    print("encoders:")
    print("  not implemented yet (camera capture issue)")
    return 0


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

    p = sub.add_parser("probe", help="print the board, cameras and encoders")
    p.set_defaults(func=cmd_probe)

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
