"""State machines the replicated tests run (importable by `confer serve --app` as
``tests.replicated.apps:Name``)."""

from __future__ import annotations

from confer.replicated import StateMachine, command, field, query
from examples.jobqueue import JobQueue


class Register(StateMachine):
    """A few commands that exercise results, errors, replicated time and randomness."""

    values: dict[str, int] = field(dict)
    log: list[str] = field(list)

    @command
    def set(self, key: str, value: int) -> int | None:
        old = self.values.get(key)
        self.values[key] = value
        return old

    @command
    def add(self, key: str, delta: int = 1) -> int:
        if key not in self.values:
            self.log.append(f"missing {key}")  # a change the failing command leaves
            raise KeyError(f"no key {key!r}")
        self.values[key] += delta
        return self.values[key]

    @command
    def stamp(self) -> list[float]:
        return [self.now, self.random.random(), self.index]

    @query
    def get(self, key: str) -> int | None:
        return self.values.get(key)

    @query(serializable=True)
    def size(self) -> int:
        return len(self.values)


class RegisterV2(Register):
    """Register's next version (an upgrade): its entries stop a member running Register."""

    version = 2


RegisterV2.__name__ = "Register"  # the same app, newer code


class RegisterV2Pinned(RegisterV2):
    """The first step of a rolling upgrade: version 2's code, writing version 1 entries."""

    write_version = 1


RegisterV2Pinned.__name__ = "Register"


class AuditedJobQueue(JobQueue):
    """examples/jobqueue.py's queue, remembering every acknowledgement: the truth a test
    checks its clients' view against (a client whose ack's outcome was unknown cannot tell
    a job acknowledged from a job lost)."""

    acked: list[int] = field(list)

    @command
    def ack(self, job_id: int) -> bool:
        removed = super().ack(job_id)
        if removed:
            self.acked.append(job_id)
        return removed

    @query
    def audit(self) -> list[int]:
        return self.acked
