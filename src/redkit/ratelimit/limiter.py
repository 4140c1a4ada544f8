"""Rate limiters: four algorithms, one script, one round trip per decision.

=================  ===========================================================================
algorithm          behaviour
=================  ===========================================================================
``fixed_window``   ``limit`` per window aligned to the server clock; cheapest; allows up to
                   2x the limit across a window boundary
``sliding_window`` two counters weighted by how far the current window has run (the
                   approximation Cloudflare popularised); exact inside one window, smooth
                   across boundaries, O(1) memory
``sliding_log``    exact: a sorted set of the consumed units of the last window, bounded by
                   ``limit`` members
``gcra``           generic cell rate algorithm (a token bucket): a steady rate of
                   ``limit / window`` with bursts of up to ``burst``; one integer of state
=================  ===========================================================================

Every decision is one ``EVALSHA`` of ``check.lua`` and reads the time from the server. A
rejected call writes nothing, so hammering a limit neither counts against it nor keeps it
alive. The process counts its limiter's denials in memory instead (bounded) and adds them
about once a second, in the background, to the limiter's "most limited keys" ranking
(:meth:`RateLimiter.top_limited`, two capped sets that expire): the check itself pays
nothing for it. :class:`RateLimits` checks several limits for one key and consumes from all
or none.

When Redis is unreachable or hung, a limiter answers by its ``fail`` policy within
``timeout`` (250 ms by default): ``"open"`` lets the request through, ``"closed"`` rejects it,
``"raise"`` raises :class:`~redkit.errors.ConnectionLost`. The timeout measures the server's
silence, not the client's backlog (with automatic pipelining, the default on standalone and
Sentinel servers): a decision the server answered is exact even if the event loop read the
reply late, and a script the server forgot (restart, failover, ``SCRIPT FLUSH``) is loaded
again instead of falling back. Opening a new connection to a hung server is bounded by the
timeout too. A circuit breaker stops calling a dead server for a few seconds, so an outage
does not add ``timeout`` to every request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from redkit._codegen import IS_ASYNC, async_only
from redkit._trace import traced
from redkit.codec import seconds
from redkit.errors import (
    ConnectionLost,
    InvalidInput,
    RateLimited,
    RedkitError,
    ScriptError,
    translate_redis_errors,
)
from redkit.ratelimit import metrics
from redkit.scripts import ScriptSet

if TYPE_CHECKING:
    from redkit.client import Redkit

__all__ = [
    "Algorithm",
    "CircuitBreaker",
    "Decision",
    "FailPolicy",
    "RateLimiter",
    "RateLimits",
]

SCRIPTS = ScriptSet(__package__)
_CHECK = SCRIPTS["check"]
_TOP_FLUSH = SCRIPTS["top_flush"]
log = logging.getLogger(__name__)

TOP_CAP = 100
"""The bound of the "most limited keys": keys counted in one process between two flushes,
and members of one of the limiter's per-minute sets on the server."""
TOP_BUCKET = 60.0
"""Seconds of one "top limited" set; the ring holds the current one and the one before."""
TOP_FLUSH_INTERVAL = 1.0
"""Seconds between a process's first uncounted denial and the flush that adds its denials
to the server's ranking: how stale :meth:`RateLimiter.top_limited` is for other processes."""

FailPolicy = Literal["open", "closed", "raise"]


class Algorithm(StrEnum):
    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"
    SLIDING_LOG = "sliding_log"
    GCRA = "gcra"


_CODES = {
    Algorithm.FIXED_WINDOW: "fw",
    Algorithm.SLIDING_WINDOW: "sw",
    Algorithm.SLIDING_LOG: "sl",
    Algorithm.GCRA: "gc",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one check. Durations in seconds.

    ``retry_after`` is the real time until the same ``cost`` would be allowed (0 when
    allowed), not a whole window. ``reset_after`` is the time until the limit is back to
    full. For several limits, the fields describe the one that binds (the rejecting limit
    with the longest wait, else the one with the least room left) and ``decisions`` holds
    every limit's own answer. What ``reset_after`` means for each algorithm (and so the
    ``t`` of the ``RateLimit`` header) is described in :mod:`redkit.ratelimit.headers`.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    policy: str = ""
    """The limiter's name (used in the ``RateLimit`` headers)."""
    window: float = 0.0
    degraded: bool = False
    """True when Redis could not be asked and the limiter's ``fail`` policy decided."""
    decisions: tuple[Decision, ...] = field(default=(), repr=False)

    def raise_if_limited(self) -> Decision:
        """Raise :class:`~redkit.errors.RateLimited` when not allowed; else return self."""
        if not self.allowed:
            raise RateLimited(
                f"rate limit {self.policy!r} exceeded: retry in {self.retry_after:.3f}s",
                retry_after=self.retry_after,
            )
        return self

    def all(self) -> tuple[Decision, ...]:
        """Every limit's decision (just this one for a single limiter)."""
        return self.decisions or (self,)


class CircuitBreaker:
    """Stop calling a failing server for ``cooldown`` seconds after ``threshold`` failures.

    After the cooldown one call is let through (half-open): success closes the circuit,
    failure opens it for another cooldown.
    """

    def __init__(self, threshold: int = 3, cooldown: float | timedelta = 5.0) -> None:
        if threshold < 1:
            raise InvalidInput("threshold must be >= 1")
        self.threshold = threshold
        self.cooldown = seconds(cooldown, "cooldown")
        self.failures = 0
        self.open_until = 0.0

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state} failures={self.failures}>"

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        if self.failures < self.threshold:
            return "closed"
        return "open" if time.monotonic() < self.open_until else "half-open"

    def allow(self) -> bool:
        if self.failures < self.threshold:
            return True
        now = time.monotonic()
        if now < self.open_until:
            return False
        # Half-open: let this one call try, and hold the others off until it reports.
        self.open_until = now + self.cooldown
        return True

    def success(self) -> None:
        self.failures = 0

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown

    def seconds_until_retry(self) -> float:
        return max(0.0, self.open_until - time.monotonic())


MAX_KEY_BYTES = 512
"""The longest rate-limit key (UTF-8 bytes, before the namespace prefix): every key is
stored, and a caller-chosen key of any size would be a way to fill the server."""
MIN_WINDOW = 0.001
"""The shortest window (1 ms): expiries are set in milliseconds, and a shorter window would
expire its state before it could count anything."""
MAX_WINDOW = 366 * 86400.0
"""The longest window (366 days, a yearly quota)."""
MAX_LIMIT = 10**12
"""The largest ``limit`` or ``burst``: counts stay exact integers in Lua's doubles."""
MAX_LOG_COST = 1000
"""The largest cost of one ``sliding_log`` call: the log stores one member per unit, and a
larger cost would overflow the script's argument stack (a few thousand units made it fail,
and so fail open) and hold the server while it writes them. Use ``gcra`` or
``sliding_window`` for weighted costs such as bytes."""


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInput("a rate limit key must be a non-empty string (e.g. 'user:42')")
    # Four bytes per character at most: only a long key needs encoding to be measured.
    if len(key) * 4 > MAX_KEY_BYTES:
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            raise InvalidInput("a rate limit key must be valid text (no lone surrogates)") from None
        if size > MAX_KEY_BYTES:
            raise InvalidInput(
                f"a rate limit key is at most {MAX_KEY_BYTES} bytes (UTF-8), got {size}; "
                "hash a long identifier first"
            )
    return key


class _Checker:
    """What RateLimiter and RateLimits share: the call, its timeout and the fail policy."""

    def __init__(
        self,
        rk: Redkit,
        limiters: Sequence[RateLimiter],
        fail: FailPolicy,
        timeout: float | timedelta,
        breaker: CircuitBreaker | None,
        name: str,
    ) -> None:
        if fail not in ("open", "closed", "raise"):
            raise InvalidInput(f"fail must be 'open', 'closed' or 'raise', got {fail!r}")
        self._rk = rk
        self._limiters = tuple(limiters)
        self.fail: FailPolicy = fail
        self.timeout = seconds(timeout, "timeout")
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.name = name
        self._names = tuple(lim.name for lim in self._limiters)
        # The "most limited keys": denials counted here (at most TOP_CAP keys), added every
        # TOP_FLUSH_INTERVAL to a ring of two per-minute sets with one hash tag (one slot, so
        # one script on a Cluster too), never by the check script, whose keys are the key's.
        top = rk.keys.group("rltop", name)
        self._top = (top.key("0"), top.key("1"))
        self._denied: dict[str, int] = {}
        self._top_lock = threading.Lock()
        self.top_flush_interval = TOP_FLUSH_INTERVAL
        """Seconds this process keeps denials before adding them to the ranking."""
        if IS_ASYNC:
            self._flush_handle: asyncio.TimerHandle | None = None
            self._tasks: set[asyncio.Task[None]] = set()
        else:
            # Sync: no loop to time a flush; the denial that finds the interval passed sends
            # the counts itself (one round trip about once per interval, as the cache's stats).
            self._flush_due = time.monotonic() + self.top_flush_interval
        # ARGV for cost=1 built once: the hot path only prepends the commit flag.
        self._validate_cost(1)
        self._args_cost1 = self._args(1)
        self._allowed, self._limited, self._errors = metrics.counters(name)

    def _args(self, cost: int) -> list[str | int]:
        args: list[str | int] = []
        for lim in self._limiters:
            args += [lim.code, lim.limit, lim.window_us, lim.burst, cost]
        return args

    def _validate_cost(self, cost: int) -> None:
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise InvalidInput(f"cost must be an int, got {cost!r}")
        if cost < 1:
            raise InvalidInput(f"cost must be >= 1, got {cost}")
        for lim in self._limiters:
            if lim.algorithm is Algorithm.SLIDING_LOG and cost > MAX_LOG_COST:
                raise InvalidInput(
                    f"cost {cost} is more than a sliding_log limit takes in one call "
                    f"({MAX_LOG_COST}): it stores one entry per unit; use gcra or "
                    "sliding_window for large costs"
                )
            if cost > lim.capacity:
                raise InvalidInput(
                    f"cost {cost} can never fit in limit {lim.name!r} (capacity "
                    f"{lim.capacity}); split the work or raise the limit"
                )

    def _state_keys(self, key: str) -> list[str]:
        # The same names as rk.keys.group("rl", key).key(name), built without the objects:
        # this runs on every request.
        prefix = f"{self._rk.namespace}:{{rl:{key}}}:"
        return [prefix + name for name in self._names]

    async def _decide(self, key: str, cost: int, commit: bool) -> Decision:
        if not isinstance(key, str) or not key or len(key) * 4 > MAX_KEY_BYTES:
            _check_key(key)
        if cost == 1 and type(cost) is int:  # not True, which equals 1
            args = self._args_cost1
        else:
            self._validate_cost(cost)
            args = self._args(cost)
        if not self.breaker.allow():
            return self._fallback("circuit open")
        try:
            raw = await self._rk.run(
                _CHECK, self._state_keys(key), ["1" if commit else "0", *args], self.timeout
            )
        except (ConnectionLost, TimeoutError, ScriptError) as exc:
            self.breaker.failure()
            self._errors.inc()
            if self.fail == "raise":
                if isinstance(exc, ConnectionLost):
                    raise
                raise ConnectionLost(
                    f"rate limiter {self.name!r}: no answer within {self.timeout}s ({exc})"
                ) from exc
            return self._fallback(str(exc))
        self.breaker.success()
        decision = self._combine(raw)
        if commit:
            if decision.allowed:
                self._allowed.inc()
            else:
                self._limited.inc()
                self._count_denial(key)
        return decision

    # -- the most limited keys ----------------------------------------------------------------

    def _count_denial(self, key: str) -> None:
        # The sync API's limiter is shared by threads (Flask, Django): the counts and their
        # swap by a flush are one critical section. (Async: uncontended, nothing awaited.)
        with self._top_lock:
            denied = self._denied
            if key in denied:
                denied[key] += 1
            elif len(denied) < TOP_CAP:
                denied[key] = 1
            else:
                # Full (more than TOP_CAP keys limited within one flush interval): the least
                # denied key makes room and the newcomer starts at its count + 1 (space-saving,
                # so a key limited steadily gets in; the counts are then upper bounds).
                lowest = min(denied, key=denied.__getitem__)
                denied[key] = denied.pop(lowest) + 1
        if IS_ASYNC:
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_later(
                    self.top_flush_interval, self._flush_later
                )
        elif time.monotonic() >= self._flush_due:
            self._flush_quietly()

    @async_only
    def _flush_later(self) -> None:
        self._flush_handle = None
        task = asyncio.ensure_future(self._flush_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_quietly(self) -> None:
        # Nobody awaits the timer's flush: an error is logged here, not left in the task.
        try:
            await self.flush_top_limited()
        except (RedkitError, TimeoutError) as exc:
            log.warning("rate limiter %r: denial counts not written (%s)", self.name, exc)

    async def flush_top_limited(self) -> None:
        """Add this process's pending denial counts to the limiter's ranking now (one round
        trip; a no-op with none pending). Runs by itself within :data:`TOP_FLUSH_INTERVAL`
        of a denial; call it before a clean shutdown to lose none."""
        with self._top_lock:
            denied, self._denied = self._denied, {}
        if IS_ASYNC:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        else:
            self._flush_due = time.monotonic() + self.top_flush_interval
        if not denied:
            return
        args: list[str | int] = [TOP_CAP]
        for key, n in denied.items():
            args += [key, n]
        try:
            with translate_redis_errors(f"top limited keys of {self.name!r}"):
                await self._rk.run(_TOP_FLUSH, self._top, args)
        except ConnectionLost:
            # Observability only: the decisions stood; these counts are dropped, not retried
            # (a retry queue would be one more thing to bound).
            log.warning(
                "rate limiter %r: denial counts not written (server unreachable)", self.name
            )

    def _combine(self, raw: list[int]) -> Decision:
        if len(self._limiters) == 1:  # the common case, without the lists
            lim = self._limiters[0]
            return Decision(
                bool(raw[0]),
                lim._capacity,
                int(raw[1]),
                raw[2] / 1e6,
                raw[3] / 1e6,
                lim.name,
                lim.window,
            )
        decisions = []
        for i, lim in enumerate(self._limiters):
            allowed, remaining, reset_us, retry_us = raw[4 * i : 4 * i + 4]
            decisions.append(
                Decision(
                    allowed=bool(allowed),
                    limit=lim.capacity,
                    remaining=int(remaining),
                    reset_after=reset_us / 1e6,
                    retry_after=retry_us / 1e6,
                    policy=lim.name,
                    window=lim.window,
                )
            )
        if len(decisions) == 1:
            return decisions[0]
        allowed = all(d.allowed for d in decisions)
        if allowed:
            binding = min(decisions, key=lambda d: (d.remaining, -d.reset_after))
        else:
            binding = max((d for d in decisions if not d.allowed), key=lambda d: d.retry_after)
        return Decision(
            allowed=allowed,
            limit=binding.limit,
            remaining=binding.remaining,
            reset_after=binding.reset_after,
            retry_after=binding.retry_after,
            policy=binding.policy,
            window=binding.window,
            decisions=tuple(decisions),
        )

    def _fallback(self, reason: str) -> Decision:
        if self.fail == "raise":
            raise ConnectionLost(f"rate limiter {self.name!r}: {reason}")
        allowed = self.fail == "open"
        retry = 0.0 if allowed else max(1.0, self.breaker.seconds_until_retry())
        decisions = tuple(
            Decision(
                allowed=allowed,
                limit=lim.capacity,
                remaining=lim.capacity if allowed else 0,
                reset_after=0.0,
                retry_after=retry,
                policy=lim.name,
                window=lim.window,
                degraded=True,
            )
            for lim in self._limiters
        )
        first = decisions[0]
        return Decision(
            allowed=allowed,
            limit=first.limit,
            remaining=first.remaining,
            reset_after=0.0,
            retry_after=retry,
            policy=first.policy,
            window=first.window,
            degraded=True,
            decisions=decisions if len(decisions) > 1 else (),
        )

    @traced("ratelimit.hit", rk="_rk")
    async def hit(self, key: str, cost: int = 1) -> Decision:
        """Consume ``cost`` if every limit allows it; one round trip."""
        return await self._decide(key, cost, commit=True)

    @traced("ratelimit.peek", rk="_rk")
    async def peek(self, key: str, cost: int = 1) -> Decision:
        """Would ``cost`` be allowed now? Consumes nothing, writes nothing."""
        return await self._decide(key, cost, commit=False)

    @traced("ratelimit.reset", rk="_rk")
    async def reset(self, key: str) -> None:
        """Forget ``key``'s usage for these limits (one ``UNLINK``)."""
        _check_key(key)
        group = self._rk.keys.group("rl", key)
        with translate_redis_errors(f"reset rate limit {self.name!r}"):
            await self._rk.redis.unlink(*(group.key(name) for name in self._names))
            # Off the ranking too: an operator who reset a key sees it leave the list (this
            # process's pending count with it; other processes' arrive with their flush).
            self._denied.pop(key, None)
            async with self._rk.redis.pipeline(transaction=False) as pipe:
                for top in self._top:
                    pipe.zrem(top, key)
                await pipe.execute()

    async def top_limited(self, count: int = 10) -> list[tuple[str, int]]:
        """The keys this limiter rejected most in the current and the previous minute, as
        ``(key, denials)``, most first (at most ``count``, from 1 to 100), summed over every
        process that uses a limiter of this name.

        Each process counts its denials in memory (at most :data:`TOP_CAP` keys between two
        flushes; past that, a new key evicts the least denied one and starts at its count + 1,
        so counts are upper bounds) and adds them to the server's per-minute sets (at most
        :data:`TOP_CAP` members each) within :data:`TOP_FLUSH_INTERVAL`: other processes'
        denials show up to that late; this process's are flushed first.
        """
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= TOP_CAP:
            raise InvalidInput(f"count must be an int from 1 to {TOP_CAP}, got {count!r}")
        await self.flush_top_limited()
        with translate_redis_errors(f"top limited keys of {self.name!r}"):
            async with self._rk.redis.pipeline(transaction=False) as pipe:
                for top in self._top:
                    pipe.zrange(top, 0, TOP_CAP - 1, desc=True, withscores=True)
                replies = await pipe.execute()
        totals: dict[str, int] = {}
        for reply in replies:
            for raw, score in reply:
                key = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                totals[key] = totals.get(key, 0) + int(score)
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:count]


class RateLimiter(_Checker):
    """``limit`` units per ``window``, checked per key with :meth:`hit`.

    Make one with ``rk.rate_limiter(limit, window, algorithm="sliding_window")``. ``burst``
    (GCRA only) is how many units may be taken at once; it defaults to ``limit``. ``name``
    identifies the limiter's state in Redis and in the ``RateLimit`` headers; the default
    is derived from the settings, so processes configured alike share their counts.

    Bounds (each refused with :class:`~redkit.errors.InvalidInput`): ``limit`` and ``burst``
    from 1 to 10**12; ``window`` from 1 ms to 366 days; for ``gcra``, at least 1 us per
    unit (``limit <= window`` in microseconds); a key of at most 512 bytes (UTF-8); a cost
    from 1 to the capacity, and at most 1,000 for ``sliding_log``, which stores one entry
    per unit.
    """

    def __init__(
        self,
        rk: Redkit,
        limit: int,
        window: float | timedelta,
        algorithm: Algorithm | str = Algorithm.SLIDING_WINDOW,
        burst: int | None = None,
        *,
        name: str | None = None,
        fail: FailPolicy = "open",
        timeout: float | timedelta = 0.25,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be an int from 1 to 10**12, got {limit!r}")
        try:
            self.algorithm = Algorithm(algorithm)
        except ValueError:
            raise InvalidInput(
                f"unknown algorithm {algorithm!r}; use one of: "
                + ", ".join(a.value for a in Algorithm)
            ) from None
        self.limit = limit
        self.window = seconds(window, "window")
        if not MIN_WINDOW <= self.window <= MAX_WINDOW:
            raise InvalidInput(
                f"window must be from {MIN_WINDOW * 1000:g} ms to {MAX_WINDOW / 86400:g} days, "
                f"got {self.window:g}s"
            )
        self.window_us = round(self.window * 1e6)
        if self.algorithm is Algorithm.GCRA and limit > self.window_us:
            # GCRA spaces units window / limit apart, in whole microseconds on the server.
            raise InvalidInput(
                f"gcra needs at least 1 us per unit: limit {limit} in {self.window:g}s is too "
                "fine; use a longer window (and a burst) or another algorithm"
            )
        if burst is not None and self.algorithm is not Algorithm.GCRA:
            raise InvalidInput("burst applies to the gcra algorithm only")
        if burst is not None and (
            isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_LIMIT
        ):
            raise InvalidInput(f"burst must be an int from 1 to 10**12, got {burst!r}")
        self.burst = burst if burst is not None else limit
        self.code = _CODES[self.algorithm]
        # Read on every decision: worked out once (an enum comparison costs microseconds).
        self._capacity = self.burst if self.algorithm is Algorithm.GCRA else self.limit
        if name is None:
            name = f"{self.algorithm.value}:{limit}/{_fmt_window(self.window)}"
            if burst is not None:
                name += f":b{burst}"
        elif not name or any(ch in name for ch in '{}"\\'):
            raise InvalidInput("a limiter name must be non-empty, without braces or quotes")
        self.name = name
        super().__init__(rk, [self], fail, timeout, breaker, name)

    @property
    def capacity(self) -> int:
        """The most units one call can ever take: ``burst`` for GCRA, else ``limit``."""
        return self._capacity

    def __repr__(self) -> str:
        return (
            f"<RateLimiter {self.name!r} {self.algorithm.value} {self.limit}/{self.window:g}s "
            f"fail={self.fail}>"
        )


class RateLimits(_Checker):
    """Several limiters, one decision: ``hit`` consumes from all of them or from none.

    ``rk.rate_limits([per_second, per_hour]).hit("user:42")``. The limits share the key's
    hash slot, so the check is one script on a Cluster too.
    """

    def __init__(
        self,
        rk: Redkit,
        limiters: Sequence[RateLimiter],
        *,
        fail: FailPolicy | None = None,
        timeout: float | timedelta | None = None,
        breaker: CircuitBreaker | None = None,
        name: str | None = None,
    ) -> None:
        limiters = list(limiters)
        if not limiters:
            raise InvalidInput("RateLimits needs at least one RateLimiter")
        names = [lim.name for lim in limiters]
        if len(set(names)) != len(names):
            raise InvalidInput(f"two limiters share a name in {names}; give them distinct names")
        super().__init__(
            rk,
            limiters,
            fail if fail is not None else limiters[0].fail,
            timeout if timeout is not None else limiters[0].timeout,
            breaker,
            name or "+".join(names),
        )
        self.limiters = tuple(limiters)

    @property
    def capacity(self) -> int:
        return min(lim.capacity for lim in self.limiters)

    def __repr__(self) -> str:
        return f"<RateLimits {', '.join(lim.name for lim in self.limiters)} fail={self.fail}>"


def _fmt_window(window: float) -> str:
    if window >= 1 and math.isclose(window, round(window)):
        return f"{round(window)}s"
    return f"{round(window * 1000)}ms"
