"""The cache of predictions the scorer keeps (reference windows, their tower outputs, alternates),
shared between the threads of a server worker."""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Hashable, Sequence

from epiformer.inference.deadline import DeadlineExceeded, remaining


class PredictionCache:
    """A thread-safe least-recently-used cache of predictions (of reference windows, say) that also
    shares work in flight: a key asked for while another caller computes it is waited for instead
    of computed again (with a capacity of 0 too, which keeps nothing afterwards).

    :meth:`claim` answers keys in three parts (:class:`CacheClaim`): values cached, values being
    computed by another caller, and the keys left to this caller, who computes them and hands
    them back with :meth:`CacheClaim.fill` inside the claim's ``with`` block."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._pending: dict[Hashable, Future] = {}
        self._lock = threading.Lock()

    def _get(self, key: Hashable) -> object | None:
        """The cached value (counted as a hit or a miss); the caller holds the lock."""
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def peek(self, keys: Sequence[Hashable]) -> dict[Hashable, object]:
        """The cached values of those ``keys`` that are cached (counted as hits and misses),
        without waiting for any being computed."""
        with self._lock:
            found = {key: self._get(key) for key in dict.fromkeys(keys)}
        return {key: value for key, value in found.items() if value is not None}

    def put(self, key: Hashable, value: object) -> None:
        """Keep ``value`` (the least recently used goes beyond the capacity)."""
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def claim(self, keys: Sequence[Hashable]) -> CacheClaim:
        """Every key's value as far as it is known: cached, or a future of another caller's
        computation; the rest are this caller's to compute (:attr:`CacheClaim.mine`)."""
        found: dict[Hashable, object] = {}
        mine: list[Hashable] = []
        with self._lock:
            for key in dict.fromkeys(keys):
                value = self._get(key)
                if value is None:
                    value = self._pending.get(key)
                if value is None:
                    value = self._pending[key] = Future()
                    mine.append(key)
                found[key] = value
        return CacheClaim(self, found, mine)

    def _release(self, keys: Sequence[Hashable]) -> None:
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)


class CacheClaim:
    """The answer of :meth:`PredictionCache.claim`: use it in a ``with`` block, :meth:`fill` the
    values of :attr:`mine`, then :meth:`wait` for all of them. Leaving the block with an error
    hands that error to the callers waiting for this one's keys."""

    def __init__(self, cache: PredictionCache, found: dict[Hashable, object], mine: list[Hashable]) -> None:
        self.cache = cache
        self.mine = mine
        self._found = found

    def __enter__(self) -> CacheClaim:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, _trace: object) -> None:
        unfilled = [key for key in self.mine if not self._found[key].done()]
        for key in unfilled:
            self._found[key].set_exception(error or RuntimeError(f"{key!r} was claimed but never computed"))
        self.cache._release(self.mine)

    def fill(self, values: Sequence[object]) -> None:
        """The values of :attr:`mine`, in order: kept, and handed to the callers waiting for them."""
        for key, value in zip(self.mine, values):
            self.cache.put(key, value)
            self._found[key].set_result(value)

    def wait(self) -> dict[Hashable, object]:
        """The value of every key, waiting for those computed elsewhere until the request's
        deadline (:mod:`epiformer.inference.deadline`; :class:`DeadlineExceeded`), or unbounded
        without one."""
        try:
            return {key: value.result(remaining()) if isinstance(value, Future) else value
                    for key, value in self._found.items()}
        except FutureTimeout:
            raise DeadlineExceeded() from None
