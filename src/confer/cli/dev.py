"""`confer dev`: a local N-node cluster in one command, for trying things out.

A node that exits (killed to watch the others carry on, say) is reported, the others keep
running, and it is started again on the same data dir after ``restart_delay`` seconds, or at
once on SIGHUP (``kill -HUP`` of `confer dev`'s pid). A node that keeps exiting right after
it starts (its port taken...) is left down after a few tries, until SIGHUP.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from confer.cli.tls import client_flags, init_dir, server_flags
from confer.nodeproc import NodeProcess

QUICK_EXIT_SECONDS = 10.0
"""A node exiting this soon after it started counts towards :data:`MAX_QUICK_EXITS`."""
MAX_QUICK_EXITS = 5
"""Quick exits in a row after which a node is left down (until SIGHUP)."""


@dataclass
class Supervised:
    """One node of the dev cluster, and when it may start again."""

    proc: NodeProcess
    started: float = 0.0
    restart_at: float | None = None
    """None while it runs; ``inf``: down until SIGHUP."""
    quick_exits: int = 0

    def start(self) -> None:
        self.proc.start()
        self.started = time.monotonic()
        self.restart_at = None


def run_dev(nodes: int, base_port: int, data_dir: Path, tick_ms: int,
            restart_delay: float = 5.0, tls: bool = False) -> int:
    procs = [NodeProcess(i, data_dir / f"node{i}", base_port + 2 * (i - 1),
                         base_port + 2 * (i - 1) + 1) for i in range(1, nodes + 1)]
    initial = ",".join(f"{p.node_id}={p.peer_addr}" for p in procs)
    tls_args: list[str] = []
    client_args = ""
    scheme = ""
    if tls:
        certs = data_dir / "tls"
        if not (certs / "ca.pem").exists():
            init_dir(certs)  # made once: a restarted dev cluster keeps its certificates
        tls_args = server_flags(certs)
        client_args = " " + " ".join(client_flags(certs))
        scheme = "https://"
        for p in procs:
            p.credentials = client_credentials(certs)
    for p in procs:
        p.args = ["--initial-cluster", initial, "--tick-ms", str(tick_ms),
                  "--name", f"dev{p.node_id}", *tls_args]
    stop = False
    restart_now = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    def on_hangup(_sig: int, _frame: object) -> None:
        nonlocal restart_now
        restart_now = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    members = [Supervised(p) for p in procs]
    try:
        for m in members:
            m.start()
        endpoints = ",".join(scheme + p.client_addr for p in procs)
        print(f"confer dev: {nodes} nodes, data in {data_dir.resolve()}, logs beside it")
        for p in procs:
            print(f"  node {p.node_id}: client {p.client_addr}  peer {p.peer_addr}  "
                  f"pid {p.pid}")
        tls_hint = ""
        if tls:
            files = client_flags(data_dir / "tls")[1::2]
            tls_hint = ("      export " + " ".join(
                f"CONFER_{name}={path}" for name, path in zip(("CACERT", "CERT", "KEY"), files,
                                                              strict=True)) + "\n")
        restarts = (f"after {restart_delay:g} s, or " if restart_delay > 0 else "") + (
            f"on kill -HUP {os.getpid()}")
        print(f"\nTry:  export CONFER_ENDPOINTS={endpoints}\n{tls_hint}"
              "      confer put /app/config/timeout 30 && confer get /app/config/timeout\n"
              "      confer status\n"
              + (f"      etcdctl --endpoints={endpoints}{client_args} member list\n"
                 if tls else "")
              + f"Kill a node to see the others carry on: it is restarted {restarts}.\n"
              "Ctrl-C stops the cluster.", flush=True)
        while not stop:
            if restart_now:
                restart_now = False
                for m in members:
                    if m.restart_at is not None:
                        m.restart_at, m.quick_exits = 0.0, 0
            supervise(members, restart_delay)
            time.sleep(0.2)
    finally:
        for p in procs:
            p.stop(timeout=10)
    print("confer dev: stopped")
    return 0


def client_credentials(certs: Path) -> grpc.ChannelCredentials:
    """The dev cluster's client TLS credentials (files of ``confer tls init``)."""
    return grpc.ssl_channel_credentials(*((certs / f).read_bytes() for f in
                                          ("ca.pem", "client-key.pem", "client.pem")))


def supervise(members: list[Supervised], restart_delay: float) -> None:
    """Report the nodes that exited, and start those whose time has come."""
    now = time.monotonic()
    for m in members:
        p = m.proc
        if m.restart_at is None and not p.alive():
            m.quick_exits = m.quick_exits + 1 if now - m.started < QUICK_EXIT_SECONDS else 0
            if m.quick_exits >= MAX_QUICK_EXITS:
                m.restart_at, then = math.inf, (
                    f"it keeps exiting: left down until kill -HUP {os.getpid()}")
            elif restart_delay > 0:
                m.restart_at, then = now + restart_delay, f"restarting in {restart_delay:g} s"
            else:
                m.restart_at, then = math.inf, f"kill -HUP {os.getpid()} restarts it"
            code = p.proc.returncode if p.proc else "?"
            print(f"node {p.node_id} exited (code {code}); the others keep running; {then} "
                  f"(log: {p.log_path})", file=sys.stderr, flush=True)
        elif m.restart_at is not None and m.restart_at <= now:
            m.start()
            print(f"node {p.node_id} restarted (pid {p.pid})", flush=True)
