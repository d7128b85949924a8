"""The transaction builder and the protobuf conversions."""

from __future__ import annotations

import pytest

from confer.client import protocol
from confer.client.errors import InvalidArgument
from confer.client.models import DeleteResult, KeyValue, PutResult
from confer.client.txn import Compare, Condition, Op, Txn
from confer.v1 import kv_pb2


def test_conditions_become_compare_messages() -> None:
    C = kv_pb2.Compare
    cases = [
        (Compare.value("/a") == b"x", C.VALUE, C.EQUAL, "value", b"x"),
        (Compare.value("/a") != "y", C.VALUE, C.NOT_EQUAL, "value", b"y"),
        (Compare.version("/b") > 0, C.VERSION, C.GREATER, "version", 0),
        (Compare.version("/b") >= 1, C.VERSION, C.GREATER, "version", 0),
        (Compare.mod_revision("/b") < 10, C.MOD, C.LESS, "mod_revision", 10),
        (Compare.create_revision("/b") <= 10, C.CREATE, C.LESS, "create_revision", 11),
        (Compare.lease("/b") == 0, C.LEASE, C.EQUAL, "lease", 0),
        (Compare.exists("/c"), C.EXISTS, C.EQUAL, "exists", True),
        (Compare.missing("/c"), C.EXISTS, C.EQUAL, "exists", False),
    ]
    for cond, target, result, field, operand in cases:
        assert isinstance(cond, Condition)
        pb = cond.to_pb()
        assert (pb.target, pb.result, pb.WhichOneof("target_union"), getattr(pb, field)) == (
            target, result, field, operand), cond
    assert repr(Compare.version("/b") > 0) == "<version('/b') > 0>"


def test_bad_conditions_and_operations_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        Compare.version("/a") == "one"  # noqa: B015
    with pytest.raises(InvalidArgument):
        Compare.value("/a") >= b"x"  # noqa: B015
    with pytest.raises(InvalidArgument):
        Compare.value(7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Op.put("/a", 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not a condition"):
        Txn(lambda call: call).if_(True).commit()  # type: ignore[arg-type]


def test_the_builder_appends_and_commits_through_the_client() -> None:
    seen = []
    txn = (Txn(lambda call: seen.append(call) or "sent", timeout=3.0)
           .if_(Compare.value("/a") == b"x").if_(Compare.exists("/c"))
           .then(Op.put("/a", "y", prev_kv=True), Op.delete("/b", recursive=True))
           .then(Op.get("/c"))
           .else_(Op.get("/a", revision=4)))
    assert txn.commit() == "sent"
    call = seen[0]
    assert call.timeout == 3.0 and call.what == "Txn /a, /c"
    req = call.request
    assert [c.path for c in req.compare] == ["/a", "/c"]
    assert [op.WhichOneof("request") for op in req.success] == ["put", "delete", "range"]
    assert req.success[0].put.value == b"y" and req.success[0].put.prev_kv
    assert req.success[1].delete.recursive
    assert req.failure[0].range.revision == 4


def test_txn_responses_become_models() -> None:
    kv = kv_pb2.KeyValue(path="/c", value=b"z", create_revision=2, mod_revision=3, version=2)
    resp = kv_pb2.TxnResponse(header=kv_pb2.ResponseHeader(revision=9), succeeded=True,
                              responses=[
        kv_pb2.ResponseOp(put=kv_pb2.PutResponse(header=kv_pb2.ResponseHeader(revision=9),
                                                 prev_kv=kv)),
        kv_pb2.ResponseOp(delete=kv_pb2.DeleteResponse(
            header=kv_pb2.ResponseHeader(revision=9), deleted=1, prev_kvs=[kv])),
        kv_pb2.ResponseOp(range=kv_pb2.RangeResponse(kvs=[kv])),
        kv_pb2.ResponseOp(range=kv_pb2.RangeResponse()),
        # The server answers a recursive delete inside a txn as a nested txn of deletes.
        kv_pb2.ResponseOp(txn=kv_pb2.TxnResponse(header=kv_pb2.ResponseHeader(revision=9),
                                                 responses=[
            kv_pb2.ResponseOp(delete=kv_pb2.DeleteResponse(deleted=1, prev_kvs=[kv])),
            kv_pb2.ResponseOp(delete=kv_pb2.DeleteResponse(deleted=2))])),
    ])
    result = protocol.txn_result(resp)
    model = KeyValue("/c", b"z", 2, 3, 2, 0)
    assert result.succeeded and result.revision == 9
    assert result.responses == (PutResult(9, model), DeleteResult(9, 1, (model,)), model, None,
                                DeleteResult(9, 3, (model,)))
    assert model.text == "z"
