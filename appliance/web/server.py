"""Serve the ASGI app with hypercorn's trio worker, as a supervised child."""

from __future__ import annotations

import logging
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette

from appliance.config import Address

__all__ = ["serve_web"]

log = logging.getLogger("appliance.web")


async def serve_web(
    app: Starlette,
    listen: Address,
    *,
    graceful_s: float = 3.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``listen`` until cancelled; ready once the socket is bound (reports the bound URLs).

    Raises:
        OSError: the address can't be bound (in use, not ours); the supervisor retries with backoff.
    """
    hcfg = HypercornConfig()
    hcfg.bind = [str(listen)]
    hcfg.accesslog = None
    hcfg.graceful_timeout = graceful_s
    # Live updates (server-sent events) hold connections open; don't cut idle keep-alives too soon.
    hcfg.keep_alive_timeout = 30
    async with trio.open_nursery() as nursery:
        # shutdown_trigger is given so hypercorn installs no signal handlers of its own: SIGTERM is ours.
        binds = await nursery.start(partial(serve, app, hcfg, shutdown_trigger=trio.sleep_forever, mode="asgi"))
        log.info("web.listening urls=%s", ",".join(binds))
        task_status.started(binds)
