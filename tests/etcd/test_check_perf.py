"""``etcdctl check perf --load=s`` runs end to end against a 3-node Confer cluster.

The small load: 50 clients (balanced over the three members, so followers forward) put 150
random 256-byte keys with 1 KiB values per second for 60 s under ``/etcdctl-check-perf/``.
With ``--auto-compact --auto-defrag`` it then deletes the prefix, compacts at that revision
and defragments every member. This test pins what etcdctl needs of Confer: no request fails,
the light load is carried, and the clean-up (delete, compact, defragment) works.

etcd's latency verdicts (no request slower than 0.5 s, a stddev under 0.1 s) measure the
machine as much as Confer: on two shared cores a busy neighbour alone breaks them (0.07 s on
a quiet machine, up to 1.5 s beside other work, with no leader change). They are a benchmark,
not a test: ``benchmarks/etcd_compare.py --check-perf s,m`` runs them beside etcd.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from testing import ProcessCluster

from .conftest import Etcdctl, kill

# 60 s of load: run alone, so as not to starve the parallel suite's processes (see ./dev).
pytestmark = pytest.mark.serial

PREFIX = "/etcdctl-check-perf/"


def test_check_perf_small_load_runs_end_to_end(cluster: ProcessCluster, etcdctl: Etcdctl) -> None:
    # check perf refuses to start while its prefix holds keys (a prefix range with limit 1).
    etcdctl.run("put", PREFIX + "leftover", "x")
    refused = etcdctl.run("check", "perf", "--load=s", check=False, timeout=30)
    assert f'prefix "{PREFIX}" has keys' in refused, refused
    assert etcdctl.run("del", "--prefix", PREFIX).strip() == "1"

    out = run_check_perf(etcdctl)
    verdicts = [line for line in re.split(r"[\r\n]", out)
                if re.search("PASS|FAIL|Throughput|Slowest|Stddev", line)]
    print("check perf verdicts (latency is a benchmark here):", verdicts)
    assert "FAIL: too many errors" not in out, f"{verdicts}\n{out[-2000:]}"
    # "PASS: Throughput is N writes/s" or "FAIL: Throughput too low: N writes/s"
    throughput = re.search(r"Throughput (?:is|too low:) (\d+) writes/s", out)
    assert throughput, verdicts
    # Half the offered 150 writes/s: far below what a loaded machine still carries, far
    # above what a cluster that lost its way (elections, stalls) would.
    assert int(throughput.group(1)) >= 75, verdicts
    compacted = re.search(r"Compacted with revision (\d+)", out)
    assert compacted, out[-2000:]
    for endpoint in etcdctl.endpoints:
        assert f'Defragmented "{endpoint}"' in out
    # It cleaned up after itself: the prefix is empty, and history before it is compacted.
    assert etcdctl.run("get", "--prefix", PREFIX) == ""
    old = etcdctl.run("get", PREFIX + "leftover", "--rev", "2", check=False)
    assert "required revision has been compacted" in old


def run_check_perf(etcdctl: Etcdctl) -> str:
    """One bounded ``check perf --load=s`` run; its whole output (exit status 1 is a FAIL)."""
    proc = subprocess.Popen(etcdctl.argv("check", "perf", "--load=s", "--auto-compact",
                                         "--auto-defrag"),
                            env=etcdctl.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        raw, _ = proc.communicate(timeout=150)  # 60 s of load, then delete/compact/defrag
    finally:
        kill(proc)
    out = raw.decode(errors="replace")
    assert proc.returncode in (0, 1), f"check perf exited {proc.returncode}: {out[-2000:]}"
    assert (proc.returncode == 0) == out.rstrip().endswith("PASS"), out[-2000:]
    return out
