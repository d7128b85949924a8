"""A FIFO job queue with at-least-once delivery: a job taken is leased to its worker; if the
worker does not acknowledge it before the lease ends (it crashed), the next take hands it
out again. Run it as examples/counter.py shows, with ``--app examples/jobqueue.py:JobQueue``.
"""

from confer.replicated import StateMachine, command, field, query


class JobQueue(StateMachine):
    next_id: int = 1
    jobs: dict[int, str] = field(dict)  # id -> payload, in FIFO order (ids only grow)
    leases: dict[int, list] = field(dict)  # id -> [worker, lease end (replicated time)]

    @command
    def put(self, payload: str) -> int:
        """Enqueue a job; its id."""
        job_id, self.next_id = self.next_id, self.next_id + 1
        self.jobs[job_id] = payload
        return job_id

    @command
    def take(self, worker: str, lease_seconds: float = 30.0) -> list | None:
        """The oldest job not leased (or whose lease ran out) as [id, payload], leased to
        ``worker``; None if there is none."""
        for job_id, payload in self.jobs.items():
            lease = self.leases.get(job_id)
            if lease is None or lease[1] <= self.now:
                self.leases[job_id] = [worker, self.now + lease_seconds]
                return [job_id, payload]
        return None

    @command
    def ack(self, job_id: int) -> bool:
        """The job is done: remove it. False if it was not in the queue (acked before)."""
        self.leases.pop(job_id, None)
        return self.jobs.pop(job_id, None) is not None

    @query
    def pending(self) -> int:
        return len(self.jobs)
