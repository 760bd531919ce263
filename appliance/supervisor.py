"""Supervision tree for trio, modelled on Erlang/OTP supervisors (DESIGN.md section 3).

A child is ``async def run(*, task_status)``, described by a frozen :class:`ChildSpec`: it calls
``task_status.started()`` once ready and, if its spec has a ``heartbeat_s``, :func:`heartbeat` while
alive. :class:`Supervisor` runs a fixed list of children, one_for_one or rest_for_one
(:class:`Strategy`); :class:`DynamicSupervisor` adds and removes children at run time. A child that
ends is started again as its :class:`Restart` type says, after a jittered :class:`Backoff`. Restart
intensity (R restarts in T seconds) is counted per child: a critical child past it makes the supervisor
stop everything and raise :class:`SupervisorEscalation`; a non-critical one keeps restarting at the
backoff cap and shows as degraded. :meth:`Supervisor.snapshot` returns a frozen
:class:`SupervisorSnapshot`, nested supervisors included.

This module is the public API and holds the two supervisors; the machinery is in
:mod:`appliance.supervision`:

- ``spec``: restart types, strategies, child states, exceptions, :class:`Backoff`, :class:`ChildSpec`;
- ``snapshot``: :class:`ChildSnapshot` and :class:`SupervisorSnapshot`, and how they are taken;
- ``child``: one child's run-time records, its task status, and :func:`heartbeat`;
- ``tree``: what both supervisors share, with the theory of operation.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from appliance.supervision.child import _CURRENT as _CURRENT  # re-exported: tests reach it here
from appliance.supervision.child import _Child, current_child_name, heartbeat
from appliance.supervision.snapshot import ChildSnapshot, SupervisorSnapshot
from appliance.supervision.spec import (
    DEFAULT_BACKOFF,
    Backoff,
    ChildFactory,
    ChildLimitError,
    ChildSpec,
    ChildStartError,
    ChildState,
    HeartbeatTimeout,
    Restart,
    StartTimeout,
    Strategy,
    SupervisorEscalation,
)
from appliance.supervision.tree import _Tree

__all__ = [
    "DEFAULT_BACKOFF",
    "Backoff",
    "ChildFactory",
    "ChildLimitError",
    "ChildSnapshot",
    "ChildSpec",
    "ChildStartError",
    "ChildState",
    "DynamicSupervisor",
    "HeartbeatTimeout",
    "Restart",
    "StartTimeout",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorSnapshot",
    "current_child_name",
    "heartbeat",
]

# One logger for the whole tree, as before the split: log config and tests filter on its name.
log = logging.getLogger("appliance.supervisor")


class Supervisor(_Tree):
    """A static supervisor: a fixed list of children, one_for_one or rest_for_one."""

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 5,
        max_seconds: float = 60.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        """A supervisor of a fixed list of children.

        Args:
            name: the supervisor's name (a child name when nested).
            children: specs in start order; names unique.
            strategy: what restarts when a child ends.
            max_restarts: restarts a child may need within ``max_seconds``; one more and a critical
                child escalates, a non-critical one restarts at ``backoff.max_s``.
            max_seconds: the intensity window.
            backoff: delays between restarts.
            rng: jitter source (seeded in tests).

        Raises:
            ValueError: duplicate or malformed names, bad limits.
        """
        super().__init__(
            name,
            strategy=strategy,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            backoff=backoff,
            rng=rng,
        )
        self._strategy_name = strategy.value
        for spec in children:
            if spec.name in self._children:
                raise ValueError(f"supervisor {name}: duplicate child name {spec.name!r}")
            self._children[spec.name] = _Child(spec)


class DynamicSupervisor(_Tree):
    """Children started and stopped at run time (OTP simple_one_for_one): push targets, cloud streams.

    Each child is one_for_one. A temporary child that ends, a transient one that returns, any child
    whose first start fails, and any child ``stop_child`` stops, is removed. Permanent and transient
    children outlive a restart of this supervisor by its parent: they start again when ``run`` does.
    """

    _strategy_name = "dynamic"

    def __init__(
        self,
        name: str,
        *,
        max_restarts: int = 5,
        max_seconds: float = 60.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        rng: random.Random | None = None,
        max_children: int | None = None,
    ) -> None:
        """A supervisor with no children until ``start_child``.

        Args:
            name, max_restarts, max_seconds, backoff, rng: as for :class:`Supervisor`.
            max_children: a bound on live children (None: unlimited).

        Raises:
            ValueError: malformed name, bad limits.
        """
        super().__init__(
            name,
            strategy=Strategy.ONE_FOR_ONE,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            backoff=backoff,
            rng=rng,
        )
        if max_children is not None and max_children < 0:
            raise ValueError(f"supervisor {name}: max_children={max_children!r}: want >= 0 or None")
        self._max_children = max_children

    def has_child(self, name: str) -> bool:
        return name in self._children

    async def start_child(self, spec: ChildSpec) -> None:
        """Add a child and wait until it is ready.

        If the caller is cancelled while waiting, the child carries on.

        Args:
            spec: the child; its name must be unique here.

        Raises:
            ChildStartError: its first attempt failed or timed out (the child is removed), or it was
                stopped before it became ready.
            ValueError: a child of that name exists.
            ChildLimitError: ``max_children`` reached.
            RuntimeError: the supervisor is not running.
        """
        if self._nursery is None or self._stopping:
            raise RuntimeError(f"supervisor {self.name} is not running")
        if spec.name in self._children:
            raise ValueError(f"supervisor {self.name}: a child named {spec.name!r} exists")
        if self._max_children is not None and len(self._children) >= self._max_children:
            raise ChildLimitError(f"supervisor {self.name}: already {len(self._children)} children")
        rec = _Child(spec)
        self._children[spec.name] = rec
        log.info("child.added supervisor=%s child=%s", self.name, spec.name)
        run = self._launch(rec, fail_fast=True)
        assert run is not None  # running and not stopping, checked above with no checkpoint since
        await run.settled.wait()
        if run.start_error is not None:
            raise ChildStartError(spec.name, run.start_error, rec.last_error or "failed") from run.start_error
        if run.stopped_early:
            raise ChildStartError(spec.name, None, "stopped before it was ready")

    async def stop_child(self, name: str) -> None:
        """Stop a child within its ``shutdown_s`` and remove it (waits longer, logging, if it is slow).

        Raises:
            KeyError: no such child.
        """
        rec = self._children[name]
        rec.removing = True
        if rec.alive():
            await self._stop(rec, reason="stop requested", patient=True)
        else:
            self._remove(rec)

    def _runner_exited(self, rec: _Child, ended: bool) -> None:
        temporary_stopped = self._stopping and rec.spec.restart is Restart.TEMPORARY
        if rec.removing or ended or temporary_stopped:
            self._remove(rec)

    def _on_exit(self) -> None:
        for rec in list(self._children.values()):
            if rec.removing or rec.spec.restart is Restart.TEMPORARY:
                self._remove(rec)

    def _remove(self, rec: _Child) -> None:
        if self._children.get(rec.spec.name) is rec:
            del self._children[rec.spec.name]
            log.info("child.removed supervisor=%s child=%s", self.name, rec.spec.name)
