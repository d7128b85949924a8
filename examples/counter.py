"""A replicated counter.

Run three members (one terminal each), then call it from anywhere:

    confer serve --app examples/counter.py:Counter --id 1 --data-dir c1 \
        --listen-client 127.0.0.1:7379 --listen-peer 127.0.0.1:7380 \
        --initial-cluster 1=127.0.0.1:7380,2=127.0.0.1:7382,3=127.0.0.1:7384
    # --id 2 ... 7381/7382, --id 3 ... 7383/7384
    python examples/counter.py 127.0.0.1:7379,127.0.0.1:7381,127.0.0.1:7383
"""

import sys

from confer.replicated import AppClient, StateMachine, command, query


class Counter(StateMachine):
    value: int = 0

    @command
    def incr(self, n: int = 1) -> int:
        """Add ``n``; the new value."""
        self.value += n
        return self.value

    @query
    def get(self) -> int:
        return self.value


if __name__ == "__main__":
    with AppClient(Counter, sys.argv[1]) as counter:
        print("now", counter.incr(5))
