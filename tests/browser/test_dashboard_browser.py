"""The web dashboard in a real browser (Debian's headless Chromium, driven by Playwright)
against a real 3-node cluster: the pages load, show the members and the leader; a key put
through the CLI appears in the tree and in the live watch; killing the leader (SIGKILL) shows
a new leader; once authentication is on, the page signs in and reads with its token, and the
signed-in root edits a key's value, which the CLI then reads, and creates and deletes a key.
Without Chromium this test fails: CI installs it (.ci/run).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from testing.dashboard import DashboardCluster, chromium

WAIT = 20_000
"""Milliseconds any one condition may take to show (generous: a shared 2-core machine)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium()
    if path is None:
        pytest.fail("no chromium on the PATH: install Debian's chromium package "
                    "(apt-get install chromium), as .ci/run does")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path)
        try:
            yield launched
        finally:
            launched.close()


def cli(cluster: DashboardCluster, *args: str) -> str:
    """Run the CLI against every member (dead ones included); its output."""
    endpoints = [n.client_addr for n in cluster.nodes.values()]
    done = subprocess.run([sys.executable, "-m", "confer", *args, "--endpoints",
                           ",".join(endpoints)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def gateway(base: str, path: str, body: dict[str, object]) -> None:
    """A POST to etcd's JSON gateway on the same listener."""
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     method="POST")
    with urllib.request.urlopen(request, timeout=WAIT / 1000) as resp:
        assert resp.status == 200


def test_the_dashboard_follows_keys_watches_and_a_leader_kill(browser: Browser,
                                                              tmp_path: Path) -> None:
    with DashboardCluster(3, tmp_path) as cluster:
        leader = cluster.leader()
        follower = next(i for i in cluster.nodes if i != leader)
        page: Page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # Cluster: '/' leads to the dashboard, which shows the three members and the leader.
        page.goto(cluster.url(follower) + "/")
        expect(page).to_have_url(re.compile(r"/ui/#/cluster$"), timeout=WAIT)
        expect(page.locator("[data-test=members] tbody tr")).to_have_count(3, timeout=WAIT)
        expect(page.locator("[data-test=leader]")).to_have_attribute(
            "data-leader", str(leader), timeout=WAIT)
        expect(page.locator(f"tr[data-member='{leader}']")).to_contain_text("leader")

        # Keys: a key put through the CLI appears in the tree, with its value (as text).
        key = "/app/config/greeting"
        cli(cluster, "put", key, "hello <b>world</b>")
        page.goto(cluster.url(follower) + "/ui/#/keys")
        for parent in ("/app", "/app/config"):
            page.get_by_role("button", name=f"expand {parent}", exact=True).click(timeout=WAIT)
        page.locator(f"a[data-path='{key}']").click(timeout=WAIT)
        expect(page.locator("[data-test=value]")).to_have_text("hello <b>world</b>",
                                                               timeout=WAIT)
        expect(page.locator("[data-test=metadata]")).to_contain_text("1")
        # Opened at its path, the tree unfolds down to the key.
        page.goto(cluster.url(follower) + f"/ui/#/keys?path={key}")
        page.reload()
        expect(page.locator(f"a.selected[data-path='{key}']")).to_be_visible(timeout=WAIT)

        # Watch: the next put shows up live.
        page.goto(cluster.url(follower) + "/ui/#/watch?path=/app&recursive=true")
        expect(page.locator("[data-test=watch-state]")).to_contain_text("Watching",
                                                                        timeout=WAIT)
        cli(cluster, "put", "/app/live", "news")
        first = page.locator("[data-test=events] tbody tr").first
        expect(first).to_contain_text("/app/live", timeout=WAIT)
        expect(first).to_contain_text("news")

        # Cluster again: kill -9 the leader; the page shows a new one and the change.
        page.goto(cluster.url(follower) + "/ui/#/cluster")
        expect(page.locator("[data-test=leader]")).to_have_attribute(
            "data-leader", str(leader), timeout=WAIT)
        cluster.nodes[leader].kill()
        survivors = "|".join(str(i) for i in cluster.nodes if i != leader)
        expect(page.locator("[data-test=leader]")).to_have_attribute(
            "data-leader", re.compile(f"^({survivors})$"), timeout=WAIT)
        expect(page.locator("[data-test=leader-changes] li").first).to_contain_text(
            re.compile(fr"\(({survivors})\) leads"), timeout=WAIT)
        expect(page.locator(f"tr[data-member='{leader}'] .bad")).to_be_visible(timeout=WAIT)

        # Authentication on: the page asks for a user and reads with its token.
        for path, body in (("user/add", {"name": "root", "password": "rootpw"}),
                           ("role/add", {"name": "root"}),
                           ("user/grant", {"user": "root", "role": "root"}),
                           ("enable", {})):
            gateway(cluster.url(follower), f"/v3/auth/{path}", body)
        page.goto(cluster.url(follower) + f"/ui/#/keys?path={key}")
        page.reload()
        expect(page.locator("#login")).to_be_visible(timeout=WAIT)
        page.fill("#login input[name=name]", "root")
        page.fill("#login input[name=password]", "rootpw")
        page.click("#login button[type=submit]")
        expect(page.locator("[data-test=value]")).to_have_text("hello <b>world</b>",
                                                               timeout=WAIT)
        expect(page.locator("#session")).to_contain_text("signed in as root")

        # Signed in: edit the value in the page; the CLI reads the new one.
        page.get_by_role("button", name="Edit", exact=True).click(timeout=WAIT)
        page.fill("[data-test=edit-value]", "edited <i>in</i> the page")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator("[data-test=value]")).to_have_text("edited <i>in</i> the page",
                                                               timeout=WAIT)
        # Every member named, the killed leader too: authentication moves past a dead one.
        assert cli(cluster, "--user", "root:rootpw", "get", key,
                   "--print-value-only") == "edited <i>in</i> the page"

        # A new key, shown once created, then deleted after the confirm().
        page.fill("[data-test=new-path]", "/app/made")
        page.fill("[data-test=new-value]", "fresh")
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.locator("[data-test=value]")).to_have_text("fresh", timeout=WAIT)
        expect(page.locator("a.selected[data-path='/app/made']")).to_be_visible(timeout=WAIT)
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete", exact=True).click()
        expect(page.locator("[data-test=no-key]")).to_be_visible(timeout=WAIT)
        expect(page.locator("a[data-path='/app/made']")).to_have_count(0, timeout=WAIT)
        assert errors == []
