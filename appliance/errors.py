"""Exception helpers shared by subsystems that run tasks in nurseries."""

from __future__ import annotations

__all__ = ["sole_exception"]


def sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, else `exc` itself.

    trio nurseries wrap a task's error in an ExceptionGroup; a subsystem that knows only one task can
    fail unwraps it, so logs and status say "camera gone", not "ExceptionGroup (1 sub-exception)".
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
