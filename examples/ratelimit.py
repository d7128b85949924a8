"""A token-bucket rate limiter shared by many clients: each key refills at ``RATE`` tokens a
second up to ``BURST``, on the replicated clock, so every member agrees on every answer.
Run it as examples/counter.py shows, with ``--app examples/ratelimit.py:RateLimiter``.
"""

from confer.replicated import StateMachine, command, field, query

RATE = 5.0  # tokens per second
BURST = 10.0  # bucket size


class RateLimiter(StateMachine):
    buckets: dict[str, list] = field(dict)  # key -> [tokens, replicated time of that count]

    def _level(self, key: str) -> float:
        tokens, then = self.buckets.get(key, [BURST, self.now])
        return min(BURST, tokens + (self.now - then) * RATE)

    @command
    def acquire(self, key: str, tokens: float = 1.0) -> bool:
        """Take ``tokens`` from ``key``'s bucket if it holds that many."""
        level = self._level(key)
        granted = level >= tokens
        self.buckets[key] = [level - tokens if granted else level, self.now]
        return granted

    @query
    def available(self, key: str) -> float:
        """Tokens in the bucket as of the last command (queries have no clock of their own)."""
        return self._level(key)
