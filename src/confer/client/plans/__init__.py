"""Every client operation as a *plan*: a generator that yields I/O actions and receives their
results, with no I/O of its own (sans-I/O).

A plan decides everything (which endpoint, what timeout, whether to retry, how to resume a
watch) with :mod:`confer.client.policy`; an I/O layer (:mod:`confer.client.sync` with
blocking gRPC, :mod:`confer.client.aio` with ``grpc.aio``) performs each action and sends
the outcome back. That is how the two clients share one implementation: they differ only in
how they perform these actions:

==============  ====================================================  =======================
action          what the I/O layer does                               sends back
==============  ====================================================  =======================
:class:`Unary`  one unary RPC (optionally: connect first)             the response, or a
                                                                      :class:`Failure`
:class:`Sleep`  sleep                                                 ``None``
:class:`Open`   open a server stream (or a bidirectional one)         a :class:`StreamHandle`
:class:`Send`   send a request on a bidirectional stream              ``None`` or a
                                                                      :class:`Failure`
:class:`Recv`   read the next message of a stream (optionally: give   the message,
                up after a timeout)                                   :data:`END` or a
                                                                      :class:`Failure`
:class:`Emit`   hand items to the caller (iterators only)             ``None``
:class:`Spawn`  run another plan in the background (a thread, or a    a runner, for
                task), handing what it emits to a function            :class:`Stop`
:class:`Stop`   cancel a spawned plan and wait for it to end          ``None``
:class:`Off-    call a blocking function (asyncio: in a worker        its return value
load`           thread)
==============  ====================================================  =======================

A plan that returns a value (a unary call) ends with ``StopIteration(value)``; a plan raises
:class:`~confer.client.errors.ConferError` to fail the operation. When performing an action
is interrupted (``KeyboardInterrupt``, asyncio cancellation), the I/O layer throws the
exception into the plan (:func:`interrupt`), which may yield clean-up actions before it lets
the exception through.

The plans live in four modules, re-exported here:

- :mod:`~confer.client.plans.actions`: the actions, and :func:`advance` / :func:`interrupt`
  with which an I/O layer drives a plan;
- :mod:`~confer.client.plans.unary_calls`: :class:`Call` and :func:`unary` (failover and
  retries), :func:`scan`;
- :mod:`~confer.client.plans.feeds`: resilient streams (:class:`Feed`, :func:`stream`) and
  the watches (:class:`KeyFeed`, :class:`ClusterFeed`);
- :mod:`~confer.client.plans.recipes`: what the coordination handles run (:class:`LeaseKeeper`
  and :func:`keep_alive`, :class:`LeaderFeed`, :class:`ServiceFeed`, :class:`HealthyFeed`).
"""

from confer.client.plans.actions import (
    END,
    STARTED,
    Action,
    Cancellable,
    Done,
    Emit,
    Offload,
    Open,
    Plan,
    Recv,
    Send,
    Sleep,
    Spawn,
    Stop,
    StreamHandle,
    Unary,
    advance,
    interrupt,
)
from confer.client.plans.feeds import ClusterFeed, Feed, KeyFeed, stream
from confer.client.plans.recipes import (
    HealthyFeed,
    LeaderFeed,
    LeaseKeeper,
    ServiceFeed,
    keep_alive,
)
from confer.client.plans.unary_calls import Call, scan, unary

__all__ = [
    "END",
    "STARTED",
    "Action",
    "Call",
    "Cancellable",
    "ClusterFeed",
    "Done",
    "Emit",
    "Feed",
    "HealthyFeed",
    "KeyFeed",
    "LeaderFeed",
    "LeaseKeeper",
    "Offload",
    "Open",
    "Plan",
    "Recv",
    "Send",
    "ServiceFeed",
    "Sleep",
    "Spawn",
    "Stop",
    "StreamHandle",
    "Unary",
    "advance",
    "interrupt",
    "keep_alive",
    "scan",
    "stream",
    "unary",
]
