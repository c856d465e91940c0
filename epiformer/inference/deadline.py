"""One deadline per request, seen by every wait made on its behalf (the runner's, the cache's),
so that a request never waits longer in all than its time, however many waits it makes and
whoever computes what it waits for. It lives in a context variable: the server sets it when it
admits a request, and the library's waits read it; outside any deadline, waits are unbounded."""
from __future__ import annotations

import time
from contextvars import ContextVar, Token

_deadline: ContextVar[float | None] = ContextVar("epiformer_deadline", default=None)


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed before what it waits for was ready."""

    def __init__(self) -> None:
        super().__init__("the request's time ran out before its predictions were ready")


def start_deadline(seconds: float) -> Token:
    """Set the deadline ``seconds`` from now for this context; :func:`end_deadline` with the
    answer removes it."""
    return _deadline.set(time.monotonic() + seconds)


def end_deadline(token: Token) -> None:
    _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the deadline: None without one; :class:`DeadlineExceeded` when none are
    left (so a wait that would end at once is never begun)."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded()
    return left
