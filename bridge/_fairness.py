"""Per-agent-key admission: how many calls, and how many request-body bytes, one key may
have in flight at once.

The global cap (DISPATCH_MAX_IN_FLIGHT) protects the bridge; these protect the other keys.
Without them one agent can fill the whole global budget (and dispatch-api's connections)
with its heaviest calls, and every other agent queues behind it or is shed. The per-key
call cap defaults far below the global one (16 of 256), so it takes 16 saturating keys to
fill the bridge; the byte cap bounds what one key's uploads hold in memory and push
downstream at once (16 MiB: three 5 MiB evidence uploads).

Over time, a key's request bodies are also held to a sustained byte rate (a token bucket
as deep as the byte cap): uploads that each finish quickly would otherwise let one key take
most of the bridge's and dispatch-api's CPU (every body is read, parsed, validated, copied
downstream, decoded and stored), and the other keys' latency pays for it. Its refusal says
when the key's budget will cover the call, and a key's refused uploads are given turns one
after another rather than all the same moment (`_turn`).

A refusal happens before any work, like the global one: nothing was done, retry shortly
(jittered, so a refused burst does not come back in step). The rate limiter's token bucket
bounds how often a key calls; this bounds how much it has running, which is what a burst
of slow, heavy calls costs.

The same counts say whom to refuse while the bridge is overloaded (`sheds`): when one key
holds most of the work in flight, the lag is its doing (a key's 5 MB uploads stall the loop
for tens of milliseconds each), so only that key is refused, not every key whose call
happens to arrive during the stall. A key that sent a heavy body in the last moments is
held to the same, even with nothing in flight now: reading and parsing an upload happens
before its call is counted, a refused one's body is still read off the socket, and the lag
looks back over such a stretch. Otherwise the overload is everyone's, and every key is
refused.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable

from tools import ToolError

#: Keys in the byte budget beyond which those with a full bucket again are forgotten.
_PRUNE_AT = 1024
#: A call in flight weighs 1, plus 1 per this many bytes of its body: reading, parsing,
#: validating and re-encoding a body costs the loop in proportion to its size.
_BYTES_PER_WEIGHT = 64 * 1024
#: A body this large (only inline evidence is) makes its key a suspect of the loop's lag for
#: `_HEAVY_MEMORY_S` after it arrived, admitted or refused.
_HEAVY_BYTES = 256 * 1024
_HEAVY_MEMORY_S = 0.25
#: How far ahead a key's refused calls are promised turns. Callers that never come back
#: leave promises behind; beyond this their key's next refusals all say this, not more.
_TURNS_AHEAD_S = 60.0
#: The least weight that makes a key the one to shed for holding most of the work: one
#: small call in flight is no one's overload, even when it is most of what is running.
_DOMINANT_WEIGHT = 2.0


class KeyAdmission:
    def __init__(
        self,
        max_calls: int,
        max_bytes: int,
        *,
        bytes_per_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_calls = max_calls
        self._max_bytes = max_bytes
        self._rate = bytes_per_s
        self._clock = clock
        self._calls: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()
        #: Of `_bytes`, those of calls held from admission whose bodies are not read yet:
        #: not spent from the byte budget yet, but about to be (`charge`).
        self._unread: Counter[str] = Counter()
        #: key -> (tokens, when): the byte budget, as a token bucket `max_bytes` deep. Only
        #: keys still paying off earlier bodies are kept (a full bucket is the default).
        self._budget: dict[str, tuple[float, float]] = {}
        #: key -> when the last turn promised to one of its refused calls comes (`_turn`).
        self._promised: dict[str, float] = {}
        #: key -> when it last sent a heavy body (see `sheds`).
        self._heavy: dict[str, float] = {}

    def refusal(self, key: str, body_bytes: int) -> ToolError | None:
        """Why `key` may not start a call of `body_bytes` now, or None when it may.

        A key with nothing in flight is always admitted one call, whatever its size (the
        body limit bounds that), so a single upload larger than the byte cap still runs."""
        if body_bytes >= _HEAVY_BYTES:  # admitted or not, its body costs the loop
            self._note_heavy(key)
        if self._calls[key] >= self._max_calls:
            return _refused(
                "agent_concurrency",
                f"This agent key already has {self._max_calls} calls in flight (its limit)",
                {"max_in_flight": self._max_calls},
            )
        held = self._bytes[key]
        if held > 0 and held + body_bytes > self._max_bytes:
            wait_s = self._turn(key, body_bytes, counting_unread=True)
            return _refused(
                "agent_bytes",
                f"This agent key's calls in flight already hold {held} bytes of request"
                f" bodies; with this one ({body_bytes}) they would exceed its limit of"
                f" {self._max_bytes}",
                {"max_in_flight_bytes": self._max_bytes, "in_flight_bytes": held},
                retry_after_ms=None if wait_s is None else _jittered_ms(wait_s),
            )
        wait_s = self._turn(key, body_bytes)
        if wait_s is not None:
            return _refused(
                "agent_byte_rate",
                f"This agent key has sent request bodies faster than its sustained limit"
                f" of {int(self._rate or 0)} bytes/s; this one ({body_bytes} bytes) has its"
                f" turn at the key's budget in {wait_s:.1f}s",
                {"max_bytes_per_s": int(self._rate or 0)},
                retry_after_ms=_jittered_ms(wait_s),
            )
        return None

    def _turn(self, key: str, body_bytes: int, *, counting_unread: bool = False) -> float | None:
        """Seconds until `key`'s byte budget covers `body_bytes`, after the bodies of its
        calls already refused and told when to return; None when it covers it now (with
        `counting_unread`, once the bodies held unread are spent too: they will be as soon
        as they are read, and the call refused for its bytes in flight comes after them).

        Each refused call is promised a turn of its own: told the same moment, a key's
        refused callers would all return together and all but one be refused again, a
        request and (unless it asked first) a body read off the socket for nothing, which
        the other keys' latency pays for. A promise reserves nothing: whoever comes when
        the budget covers its body is admitted. Turns are for heavy bodies, whose herd
        costs the others: a small call is not queued behind a key's uploads."""
        if self._rate is None or body_bytes <= 0:
            return None
        # A body larger than the bucket needs a full bucket, not more, so it can pass.
        need = min(body_bytes, self._max_bytes)
        tokens = self._tokens(key)
        if need <= tokens and not counting_unread:
            return None
        short = need - (tokens - self._unread[key])
        if short <= 0:
            return None
        now = self._clock()
        turn = now + short / self._rate
        if body_bytes < _HEAVY_BYTES:  # a small call waits for its own bytes only
            return turn - now
        promised = self._promised.get(key, now)
        if promised > now:  # a turn still to come was promised: this one's comes after it
            after = min(promised + need / self._rate, now + _TURNS_AHEAD_S)
            turn = max(turn, after)
        self._promised[key] = turn
        if len(self._promised) > _PRUNE_AT:  # forget the promises already due
            self._promised = {k: t for k, t in self._promised.items() if t > now}
        return turn - now

    def _tokens(self, key: str) -> float:
        tokens, when = self._budget.get(key, (float(self._max_bytes), self._clock()))
        assert self._rate is not None
        return min(float(self._max_bytes), tokens + (self._clock() - when) * self._rate)

    def enter(self, key: str, body_bytes: int, *, charge: bool = True) -> None:
        """Count a call of `body_bytes` in flight for `key`; `charge` also spends its bytes
        from the key's byte budget (else `charge` it once the body has been read: a body
        refused unread, or for its size, costs the key nothing)."""
        self._calls[key] += 1
        self._bytes[key] += body_bytes
        if charge:
            self._spend(key, body_bytes)
        else:
            self._unread[key] += body_bytes

    def charge(self, key: str, body_bytes: int) -> None:
        """Spend the `body_bytes` of a call held unread (`enter(charge=False)`), now read."""
        self._unread[key] = max(0, self._unread[key] - body_bytes)
        self._spend(key, body_bytes)

    def _spend(self, key: str, body_bytes: int) -> None:
        """Spend `body_bytes` from `key`'s byte budget (the sustained byte rate)."""
        if self._rate is not None and body_bytes > 0:
            now = self._clock()
            left = self._tokens(key) - body_bytes  # may go below zero: a debt paid by waiting
            if left >= self._max_bytes:
                self._budget.pop(key, None)
            else:
                self._budget[key] = (left, now)
            if len(self._budget) > _PRUNE_AT:  # forget the keys whose bucket is full again
                full = float(self._max_bytes)
                self._budget = {k: v for k, v in self._budget.items() if self._tokens(k) < full}

    def leave(self, key: str, body_bytes: int) -> None:
        self._calls[key] -= 1
        self._bytes[key] -= body_bytes
        if self._calls[key] <= 0:  # keep the counters bounded by the keys busy now
            del self._calls[key]
            del self._bytes[key]
            self._unread.pop(key, None)
        elif self._unread[key] > self._bytes[key]:
            # A held call leaving unread (refused for its size) is not told apart from one
            # that was read: what is unread is at most what is still in flight.
            self._unread[key] = self._bytes[key]

    def _note_heavy(self, key: str) -> None:
        now = self._clock()
        self._heavy[key] = now
        if len(self._heavy) > _PRUNE_AT:
            self._heavy = {k: t for k, t in self._heavy.items() if now - t < _HEAVY_MEMORY_S}

    def sheds(self, key: str) -> bool:
        """Whether `key` is to be refused while the bridge is overloaded: when one key holds
        more than half of the weight in flight (and more than a small call's), that key
        only; else, when keys sent heavy bodies in the last `_HEAVY_MEMORY_S`, those keys
        only; else every key."""
        weights = {k: n + self._bytes[k] / _BYTES_PER_WEIGHT for k, n in self._calls.items()}
        heaviest = max(weights, key=weights.__getitem__, default=None)
        if heaviest is not None:
            most = weights[heaviest]
            if most >= _DOMINANT_WEIGHT and most * 2 > sum(weights.values()):
                return key == heaviest
        now = self._clock()
        recent = {k for k, t in self._heavy.items() if now - t < _HEAVY_MEMORY_S}
        return key in recent if recent else True

    def in_flight(self, key: str) -> tuple[int, int]:
        """(calls, body bytes) `key` has in flight."""
        return self._calls[key], self._bytes[key]


def _jittered_ms(wait_s: float) -> int:
    return round(wait_s * 1000) + random.randint(0, 100)


def _refused(
    reason: str, why: str, details: dict[str, int], retry_after_ms: int | None = None
) -> ToolError:
    return ToolError(
        "rate_limited",
        f"{why}; nothing was done. Retry after the indicated delay; other agents are not affected.",
        retryable=True,
        retry_after_ms=retry_after_ms or random.randint(100, 500),
        details={"reason": reason, **details},
    )
