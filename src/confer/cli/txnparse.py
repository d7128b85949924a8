"""The `confer txn` input language (close to etcdctl's):

    compares, one per line                      value("/a") = "x"    version("/b") > 0
                                                mod("/c") < 42       create("/d") = 0
                                                lease("/e") != 7     exists("/f")   missing("/g")
    <blank line>
    operations on success, one per line         put /a "new value"   del /b   del -r /dir
                                                get /c
    <blank line>
    operations on failure, one per line

Lines starting with # are ignored. Values may be quoted as in a shell.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from confer.client.txn import Compare, Condition, Op
from confer.v1 import kv_pb2


class TxnSyntaxError(ValueError):
    def __init__(self, line_no: int, line: str, rule: str) -> None:
        super().__init__(f"txn line {line_no}: {rule}: {line!r}")


_COMPARE = re.compile(
    r"""^\s*(?P<target>value|version|create|mod|lease)\(\s*(?P<path>"[^"]*"|'[^']*'|[^)\s]+)\s*\)
        \s*(?P<op>=|==|!=|>|<)\s*(?P<value>.+?)\s*$""", re.VERBOSE)
_EXISTS = re.compile(
    r"""^\s*(?P<which>exists|missing)\(\s*(?P<path>"[^"]*"|'[^']*'|[^)\s]+)\s*\)\s*$""")

_FIELDS = {"value": Compare.value, "version": Compare.version, "create": Compare.create_revision,
           "mod": Compare.mod_revision, "lease": Compare.lease}


@dataclass
class ParsedTxn:
    compare: list[Condition] = field(default_factory=list)
    success: list[kv_pb2.RequestOp] = field(default_factory=list)
    failure: list[kv_pb2.RequestOp] = field(default_factory=list)


def _unquote(s: str) -> str:
    return shlex.split(s)[0] if s[:1] in "\"'" else s


def parse_compare(line_no: int, line: str) -> Condition:
    m = _EXISTS.match(line)
    if m:
        path = _unquote(m["path"])
        return Compare.exists(path) if m["which"] == "exists" else Compare.missing(path)
    m = _COMPARE.match(line)
    if not m:
        raise TxnSyntaxError(line_no, line, "expected TARGET(\"/path\") OP VALUE, "
                             "exists(\"/path\") or missing(\"/path\")")
    fld = _FIELDS[m["target"]](_unquote(m["path"]))
    raw = m["value"]
    if m["target"] == "value":
        try:
            value: bytes | int = shlex.split(raw)[0].encode() if raw[:1] in "\"'" else raw.encode()
        except ValueError:
            raise TxnSyntaxError(line_no, line, "unbalanced quotes") from None
    else:
        if not raw.lstrip("-").isdigit():
            raise TxnSyntaxError(line_no, line, f"{m['target']} compares with an integer")
        value = int(raw)
    op = m["op"]
    if op in ("=", "=="):
        return fld == value
    if op == "!=":
        return fld != value
    if op == ">":
        return fld > value
    return fld < value


def parse_op(line_no: int, line: str) -> kv_pb2.RequestOp:
    try:
        words = shlex.split(line)
    except ValueError:
        raise TxnSyntaxError(line_no, line, "unbalanced quotes") from None
    verb, args = words[0], words[1:]
    if verb == "put" and len(args) == 2:
        return Op.put(args[0], args[1])
    if verb in ("del", "delete") and len(args) == 1:
        return Op.delete(args[0])
    if verb in ("del", "delete") and len(args) == 2 and args[0] in ("-r", "--recursive"):
        return Op.delete(args[1], recursive=True)
    if verb == "get" and len(args) == 1:
        return Op.get(args[0])
    raise TxnSyntaxError(line_no, line, "expected 'put PATH VALUE', 'del [-r] PATH' or 'get PATH'")


def parse_txn(text: str) -> ParsedTxn:
    txn = ParsedTxn()
    section = 0
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not line:
            section += 1
            if section > 2:
                raise TxnSyntaxError(line_no, raw, "at most three sections (compares, success, "
                                     "failure) separated by blank lines")
            continue
        if section == 0:
            txn.compare.append(parse_compare(line_no, line))
        elif section == 1:
            txn.success.append(parse_op(line_no, line))
        else:
            txn.failure.append(parse_op(line_no, line))
    return txn
