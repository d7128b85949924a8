"""The asyncio Confer client: ``confer.aio.Client``.

Same methods, models and exceptions as ``confer.Client`` (everything ``confer.client``
exports is here too); request methods are coroutines, watches are async iterators::

    import confer.aio

    async with confer.aio.Client(["127.0.0.1:7379"]) as client:
        await client.put("/app/db", b"postgres://...")
        async for event in client.watch("/app", recursive=True):
            ...

See ``docs/client.md``.
"""

from confer.client import errors, models
from confer.client.aio import Client, Watch
from confer.client.checks import Check, CheckKind
from confer.client.coord import Election, Lease, Lock, Registration
from confer.client.errors import *  # noqa: F403
from confer.client.models import *  # noqa: F403
from confer.client.txn import Compare, Condition, Op, Txn

__all__ = ["Check", "CheckKind", "Client", "Compare", "Condition", "Election", "Lease", "Lock",
           "Op", "Registration", "Txn", "Watch", *errors.__all__, *models.__all__]
