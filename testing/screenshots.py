"""Screenshots of the web dashboard's main pages for docs/dashboard.md, taken by the system's
Chromium (through Playwright) from a real 3-node cluster filled with example data:

    python -m testing.screenshots [--out docs/img]

The cluster's leader is killed and restarted first, so the leader timeline has a change.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import grpc
from playwright.sync_api import Page, expect, sync_playwright

from confer.v1 import coord_pb2, coord_pb2_grpc, kv_pb2, kv_pb2_grpc
from testing.dashboard import DashboardCluster, chromium

WAIT = 20_000
"""Milliseconds a page may take to show what a screenshot needs."""
TTL = 600
"""The example leases' TTL: they outlive the run."""
TIMEOUT = 20.0


class Example:
    """Example data in a cluster: configuration keys with history, leases, a lock with a
    waiter, an election with two candidates, registered services."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.kv = kv_pb2_grpc.KVStub(channel)
        self.leases = coord_pb2_grpc.LeaseStub(channel)
        self.waiting: list[grpc.Future] = []
        """Lock and Campaign calls still waiting for their turn (cancelled by :meth:`end`)."""

    def put(self, path: str, value: bytes, lease: int = 0) -> None:
        self.kv.Put(kv_pb2.PutRequest(path=path, value=value, lease=lease), timeout=TIMEOUT)

    def lease(self) -> int:
        return int(self.leases.Grant(coord_pb2.LeaseGrantRequest(ttl=TTL), timeout=TIMEOUT).id)

    def fill(self, channel: grpc.Channel) -> None:
        endpoints = ["10.0.0.1:7379", "10.0.0.2:7379"]
        for version in ({"timeout_ms": 500, "retries": 3, "endpoints": endpoints[:1]},
                        {"timeout_ms": 750, "retries": 3, "endpoints": endpoints},
                        {"timeout_ms": 750, "retries": 5, "endpoints": endpoints}):
            self.put("/app/config/service.json", json.dumps(version, indent=1).encode())
        self.put("/app/config/timeout", b"30")
        self.put("/app/feature-flags/dark-mode", b"on")
        self.put("/app/certs/ca.der", bytes(range(0x30, 0x80)) + b"\x00\xff\xfe")

        locks = coord_pb2_grpc.LockStub(channel)
        locks.Lock(coord_pb2.LockRequest(name="/locks/db-migration", lease=self.lease()),
                   timeout=TIMEOUT)
        self.waiting.append(locks.Lock.future(
            coord_pb2.LockRequest(name="/locks/db-migration", lease=self.lease())))
        election = coord_pb2_grpc.ElectionStub(channel)
        election.Campaign(coord_pb2.CampaignRequest(name="/elections/scheduler",
                                                    lease=self.lease(), value=b"node-a:9000"),
                          timeout=TIMEOUT)
        self.waiting.append(election.Campaign.future(
            coord_pb2.CampaignRequest(name="/elections/scheduler", lease=self.lease(),
                                      value=b"node-b:9000")))
        for service, instance, address, zone in (("api", "a1", "10.0.0.1:8080", "eu-1"),
                                                 ("api", "a2", "10.0.0.2:8080", "eu-2"),
                                                 ("billing", "b1", "10.0.1.7:9090", "eu-1")):
            value = {"address": address, "metadata": {"zone": zone}}
            self.put(f"/services/{service}/{instance}", json.dumps(value).encode(),
                     lease=self.lease())

    def end(self) -> None:
        for call in self.waiting:
            call.cancel()


def shoot(page: Page, out: Path, name: str, url: str, ready: Callable[[], None]) -> None:
    page.goto(url)
    ready()
    path = out / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path}")


def take(cluster: DashboardCluster, out: Path, browser_path: str) -> None:
    # A leader change for the timeline: kill the leader, and start it again once another
    # leads.
    first = cluster.leader()
    cluster.nodes[first].kill()
    leader = cluster.leader(among=[i for i in cluster.nodes if i != first])
    cluster.nodes[first].start()
    cluster.nodes[first].wait_ready(30)
    served_by = next(i for i in cluster.nodes if i not in (first, leader))  # saw both
    base = cluster.url(served_by) + "/ui/"
    with grpc.insecure_channel(cluster.nodes[leader].client_addr) as channel:
        example = Example(channel)
        example.fill(channel)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=browser_path)
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                shots(page, out, base, example)
                browser.close()
        finally:
            example.end()


def shots(page: Page, out: Path, base: str, example: Example) -> None:
    shoot(page, out, "cluster", base + "#/cluster", lambda: expect(
        page.locator("[data-test=members] .good")).to_have_count(3, timeout=WAIT))
    shoot(page, out, "keys", base + "#/keys?path=/app/config/service.json",
          lambda: expect(page.locator("[data-test=diff] .add").first).to_be_visible(
              timeout=WAIT))

    def watch_ready() -> None:
        expect(page.locator("[data-test=watch-state]")).to_contain_text("Watching",
                                                                        timeout=WAIT)
        example.put("/app/config/timeout", b"45")
        example.put("/app/feature-flags/beta", b"off")
        example.kv.Delete(kv_pb2.DeleteRequest(path="/app/feature-flags/beta"),
                          timeout=TIMEOUT)
        expect(page.locator("[data-test=events] tbody tr")).to_have_count(3, timeout=WAIT)

    shoot(page, out, "watch", base + "#/watch?path=/app&recursive=true", watch_ready)
    shoot(page, out, "leases", base + "#/leases",
          lambda: expect(page.locator("[data-test=leases] tbody tr")).to_have_count(
              7, timeout=WAIT))
    def showing(text: str) -> Callable[[], None]:
        return lambda: expect(page.locator("main")).to_contain_text(text, timeout=WAIT)

    shoot(page, out, "locks", base + "#/locks", showing("Waiters, in order"))
    shoot(page, out, "elections", base + "#/elections", showing("Candidates, in order"))
    shoot(page, out, "services", base + "#/services", showing("10.0.1.7:9090"))

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"),
                        help="where the PNG files go [docs/img]")
    args = parser.parse_args(argv)
    browser_path = chromium()
    if browser_path is None:
        raise SystemExit("no chromium on the PATH: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = DashboardCluster(3, Path(tmp))
        with cluster:
            take(cluster, args.out, browser_path)


if __name__ == "__main__":
    main()
