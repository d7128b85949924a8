"""`confer dev`: a local N-node cluster in one command, for trying things out."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import grpc

from confer.cli.tls import client_flags, init_dir, server_flags
from confer.nodeproc import NodeProcess


def run_dev(nodes: int, base_port: int, data_dir: Path, tick_ms: int, tls: bool = False) -> int:
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

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for p in procs:
            p.start()
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
        print(f"\nTry:  export CONFER_ENDPOINTS={endpoints}\n{tls_hint}"
              "      confer put /app/config/timeout 30 && confer get /app/config/timeout\n"
              "      confer status\n"
              + (f"      etcdctl --endpoints={endpoints}{client_args} member list\n"
                 if tls else "")
              + "Ctrl-C stops the cluster.", flush=True)
        while not stop:
            for p in procs:
                if not p.alive():
                    print(f"node {p.node_id} exited (code {p.proc.returncode if p.proc else '?'});"
                          f" see {p.log_path}", file=sys.stderr)
                    stop = True
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
