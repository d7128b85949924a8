"""`confer dev --tls`: a local cluster with mTLS everywhere, and the client settings it
prints work as printed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from testing.procs import free_port


def test_dev_tls_prints_client_settings_that_work(tmp_path: Path) -> None:
    base = free_port()
    while base + 1 > 32767 or base % 2:  # node 1 takes base and base+1
        base = free_port()
    dev = subprocess.Popen(
        [sys.executable, "-m", "confer", "dev", "--tls", "--nodes", "1", "--base-port",
         str(base), "--data-dir", str(tmp_path / "dev"), "--tick-ms", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert dev.stdout is not None
        out = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = dev.stdout.readline()
            if not line:
                break
            out.append(line)
            if "Ctrl-C stops the cluster" in line:
                break
        printed = "".join(out)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFER_")}
        env.update(re.findall(r"(CONFER_[A-Z]+)=(\S+)", printed))
        assert env.get("CONFER_ENDPOINTS") == f"https://127.0.0.1:{base}", printed
        assert {"CONFER_CACERT", "CONFER_CERT", "CONFER_KEY"} <= env.keys(), printed

        def confer(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "confer", *args], env=environ,
                                  capture_output=True, text=True, timeout=60)

        put = confer("put", "/dev/tls", "1", "--timeout", "60", environ=env)  # starting
        assert put.returncode == 0, put.stderr + printed
        assert confer("get", "/dev/tls", environ=env).stdout.strip() == "1"
        plain = {k: v for k, v in env.items() if k not in ("CONFER_CACERT", "CONFER_CERT",
                                                           "CONFER_KEY")}
        plain["CONFER_ENDPOINTS"] = f"127.0.0.1:{base}"
        refused = confer("get", "/dev/tls", "--timeout", "1", environ=plain)
        assert refused.returncode == 3 and "serves TLS" in refused.stderr
    finally:
        if dev.poll() is None:
            os.kill(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(dev.pid, signal.SIGKILL)
            dev.wait(timeout=10)


def test_a_tls_client_started_before_the_member_listens_connects_once_it_does(
        tmp_path: Path) -> None:
    """With grpcio's event_engine_client experiment off (as `confer` once set it), a TLS
    channel whose first attempt was refused never connected: this command failed."""
    from confer.cli.tls import client_flags, init_dir, server_flags

    init_dir(tmp_path / "tls")
    port, peer = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONFER_", "GRPC_"))}
    client = subprocess.Popen(
        [sys.executable, "-m", "confer", "put", "/early", "1", "--timeout", "60",
         "--endpoints", f"https://127.0.0.1:{port}", *client_flags(tmp_path / "tls")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        time.sleep(2)  # the client has tried, and been refused
        server = subprocess.Popen(
            [sys.executable, "-m", "confer", "serve", "--data-dir", str(tmp_path / "data"),
             "--listen-client", f"127.0.0.1:{port}", "--listen-peer", f"127.0.0.1:{peer}",
             "--tick-ms", "50", *server_flags(tmp_path / "tls")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, err = client.communicate(timeout=90)
        assert client.returncode == 0, err
        assert out.startswith("OK")
    finally:
        for proc in (client, server):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
