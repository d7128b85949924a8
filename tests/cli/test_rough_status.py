"""`confer status` and `confer endpoint health` with a member down: a short per-member
timeout, and a non-zero exit status, so that both serve as health checks."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from testing import ProcessCluster
from tests.cli.test_rough_cli import confer


def test_status_and_endpoint_health_report_a_dead_or_stuck_member(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as c:
        c.leader()
        env = {"CONFER_ENDPOINTS": ",".join(c.endpoints)}
        r = confer("status", env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().count("healthy") == 3
        r = confer("endpoint", "health", "-o", "json", env=env)
        assert r.returncode == 0 and all(e["health"] for e in json.loads(r.stdout))

        stuck = c.nodes[3]
        stuck.signal(signal.SIGSTOP)  # alive, answering nothing
        try:
            # A 600 s request timeout: only the per-member timeout ends these within 60 s.
            r = confer("status", "--timeout", "600", env=env, timeout=60)
            assert r.returncode == 3
            rows = {line.split()[0]: line for line in r.stdout.decode().splitlines()[2:]}
            assert "unhealthy: no answer" in rows["3"]
            assert rows["1"].endswith(" healthy") and rows["2"].endswith(" healthy")
            r = confer("endpoint", "health", "--cluster", "--timeout", "600", env=env,
                       timeout=60)
            assert r.returncode == 3
            assert f"{stuck.client_addr} is unhealthy: no answer" in r.stdout.decode()
        finally:
            stuck.signal(signal.SIGCONT)

        stuck.kill()
        r = confer("endpoint", "health", env=env, timeout=60)
        assert r.returncode == 3
        lines = r.stdout.decode().splitlines()
        assert [line.split()[2] for line in lines] == ["healthy:", "healthy:", "unhealthy:"]
        live = {"CONFER_ENDPOINTS": ",".join(f"http://{e}" for e in c.endpoints[:2])}
        r = confer("endpoint", "health", env=live)
        assert r.returncode == 0
        assert r.stdout.decode().startswith(f"{c.endpoints[0]} is healthy: took = ")
        r = confer("status", "-o", "json", env=env, timeout=60)
        assert r.returncode == 3
        health = {m["member"]["id"]: m["health"] for m in json.loads(r.stdout)}
        assert health[1] == health[2] == "healthy"
        assert health[3].startswith("unhealthy: no answer")
