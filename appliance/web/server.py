"""Serve the ASGI app with hypercorn's trio worker, as a supervised child."""

from __future__ import annotations

import logging
import socket
from functools import partial
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette

from appliance.config import Address

__all__ = ["serve_web"]

log = logging.getLogger("appliance.web")
_HYPERCORN_LOG = logging.getLogger("appliance.web.hypercorn")
_HYPERCORN_LOG.setLevel(logging.WARNING)


async def serve_web(
    app: Starlette,
    listen: Address,
    *,
    graceful_s: float = 3.0,
    tls: tuple[Path, Path] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``listen`` until cancelled; ready once the socket is bound (reports the bound URLs).

    ``tls``: (certificate, key) PEM files to serve https with (see appliance.web.tls).

    Raises:
        OSError: the address can't be bound (in use, not ours); the supervisor retries with backoff.
    """
    _check_bindable(listen)
    hcfg = HypercornConfig()
    hcfg.bind = [str(listen)]
    hcfg.accesslog = None
    # Through our logging (one structured line per event), not hypercorn's own stderr handler; its
    # "Running on ..." chatter stays below warning, web.listening below says the same.
    hcfg.errorlog = _HYPERCORN_LOG
    hcfg.graceful_timeout = graceful_s
    if tls is not None:
        hcfg.certfile, hcfg.keyfile = str(tls[0]), str(tls[1])
    # Live updates (server-sent events) hold connections open; don't cut idle keep-alives too soon.
    hcfg.keep_alive_timeout = 30
    async with trio.open_nursery() as nursery:
        # starlette's ASGI types and hypercorn's are the same protocol, spelt differently.
        asgi: Any = app
        # shutdown_trigger: we stop the server by cancelling it (the supervisor), not by a signal.
        binds = await nursery.start(
            partial(serve, asgi, hcfg, shutdown_trigger=trio.sleep_forever, mode="asgi")
        )
        log.info("web.listening urls=%s", ",".join(binds))
        task_status.started(binds)


def _check_bindable(listen: Address) -> None:
    """Fail with a clear error naming the address before hypercorn tries (and leaks a socket on failure)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((listen.host, listen.port))
        except OSError as e:
            raise OSError(e.errno, f"web.listen={listen}: cannot listen: {e.strerror}") from None
