"""The deployment files under ``deploy/`` say what ``confer serve`` understands.

No container runtime is needed: the Dockerfile, compose and Kubernetes files are parsed and
their settings (flags and ``CONFER_*`` variables) checked against ``confer serve`` itself;
the image's entrypoint script runs here, with a fake StatefulSet pod name, and starts a
3-member cluster on loopback with compose's settings; the systemd unit goes through
``systemd-analyze verify``.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

import confer
from confer.cli import cli
from confer.nodeproc import NodeProcess
from confer.server import config
from testing.procs import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"
HEALTHCHECK = DEPLOY / "healthcheck.py"
DATA_VOLUME = "/var/lib/confer"
CLIENT_PORT, PEER_PORT, HTTP_PORT = 7379, 7380, 8379
RULE_EXAMPLE = ("--some-name", "CONFER_SOME_NAME")
"""The comments' illustration of the naming rule: no real flag or variable."""


# -- what `confer serve` accepts ------------------------------------------------------------
def serve_flags() -> set[str]:
    """Every option string of `confer serve` (from the click command itself)."""
    command = cli.commands["serve"]
    return {opt for p in command.params if isinstance(p, click.Option)
            for opt in (*p.opts, *p.secondary_opts)}


def flags_in(args: list[str]) -> list[str]:
    """The flags (``--name``, ``--name=value``'s ``--name``) among ``args``."""
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def check_serve_args(args: list[str], where: str) -> None:
    unknown = set(flags_in(args)) - serve_flags()
    assert not unknown, f"{where} passes flags confer serve does not take: {sorted(unknown)}"


def confer_names(text: str) -> set[str]:
    return set(re.findall(r"\bCONFER_[A-Z0-9_]*[A-Z0-9]\b", text))


# -- the Dockerfile -------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """deploy/Dockerfile's instructions, (KEYWORD, arguments), continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def instructions(keyword: str) -> list[str]:
    return [rest for k, rest in dockerfile() if k == keyword]


def image_env() -> dict[str, str]:
    """The image's ENV settings."""
    env: dict[str, str] = {}
    for rest in instructions("ENV"):
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def exec_form(rest: str) -> list[str]:
    """An instruction's JSON (exec) form, after any ``--option``s (HEALTHCHECK's)."""
    start = rest.index("[")
    parsed: list[str] = json.loads(rest[start:])
    return parsed


def test_dockerfile_builds_a_wheel_then_installs_it_without_the_test_extra() -> None:
    froms = instructions("FROM")
    assert len(froms) == 2, "multi-stage: a build stage and the runtime image"
    assert all(re.fullmatch(r"python:3\.1[12]-slim( AS \w+)?", f) for f in froms), froms
    runs = " ".join(instructions("RUN"))
    assert "pip wheel" in runs
    assert "confer-kv" in runs and "[test]" not in runs and ".[" not in runs
    assert "from=build" in runs, "the runtime stage takes the wheels from the build stage"


def test_dockerfile_runs_as_a_user_with_data_on_a_volume() -> None:
    (user,) = instructions("USER")
    assert user.split(":")[0] not in ("root", "0")
    uid = re.search(r"useradd .*--uid (\d+)", " ".join(instructions("RUN")))
    assert uid and int(uid.group(1)) > 0
    assert instructions("VOLUME") == [DATA_VOLUME]
    env = image_env()
    assert Path(env["CONFER_DATA_DIR"]).is_relative_to(DATA_VOLUME)


def test_dockerfile_exposes_the_ports_it_listens_on() -> None:
    env = image_env()
    ports = {int(env[v].rpartition(":")[2]) for v in
             ("CONFER_LISTEN_CLIENT", "CONFER_LISTEN_PEER", "CONFER_LISTEN_METRICS")}
    assert ports == {CLIENT_PORT, PEER_PORT, HTTP_PORT}
    (exposed,) = instructions("EXPOSE")
    assert {int(p) for p in exposed.split()} == ports
    # Every interface: a container's loopback is its own.
    assert all(env[v].startswith("0.0.0.0:") for v in
               ("CONFER_LISTEN_CLIENT", "CONFER_LISTEN_PEER", "CONFER_LISTEN_METRICS"))


def test_dockerfile_health_check_and_entrypoint() -> None:
    (health,) = instructions("HEALTHCHECK")
    assert exec_form(health) == ["confer-healthcheck", "/health"]
    copies = {shlex.split(c)[-1]: shlex.split(c)[-2] for c in instructions("COPY")
              if not c.startswith("--from")}
    assert copies["/usr/local/bin/confer-healthcheck"] == "deploy/healthcheck.py"
    assert copies["/usr/local/bin/docker-entrypoint.sh"] == "deploy/docker-entrypoint.sh"
    (entrypoint,) = instructions("ENTRYPOINT")
    assert exec_form(entrypoint) == ["docker-entrypoint.sh"]
    check_serve_args([a for c in instructions("CMD") for a in exec_form(c)], "CMD")


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text()
             .splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "an allow-list: nothing but what is named below"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for c in instructions("COPY"):
        copied.update(a.rstrip("/") for a in shlex.split(c)[:-1] if not a.startswith("--"))
    assert copied == allowed
    assert all((ROOT / path).exists() for path in copied)


# -- every settings name, everywhere ----------------------------------------------------------
def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def test_every_confer_variable_named_in_deploy_is_a_setting() -> None:
    known = config.env_vars()
    named: dict[str, set[str]] = {}
    for path in deploy_files():
        for name in confer_names(path.read_text()) - {RULE_EXAMPLE[1]}:
            named.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    unknown = {n: sorted(files) for n, files in named.items() if n not in known}
    assert not unknown, f"CONFER_* names no setting reads: {unknown}"
    assert len(named) >= 10  # the scan did see the files' settings


def test_the_entrypoint_names_only_serve_flags() -> None:
    text = ENTRYPOINT.read_text()
    assert re.search(r"^exec confer serve \"\$@\"$", text, re.M)
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", text)) - {RULE_EXAMPLE[0]}
    assert flags
    check_serve_args(sorted(flags), "docker-entrypoint.sh")
    subprocess.run(["/bin/sh", "-n", str(ENTRYPOINT)], check=True)


# -- the entrypoint, run here ---------------------------------------------------------------
@pytest.fixture
def fake_confer(tmp_path: Path) -> Path:
    """A directory holding a ``confer`` that prints its arguments and CONFER_* variables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "confer"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "print(json.dumps({'argv': sys.argv[1:], 'env': {k: v for k, v in "
                    "os.environ.items() if k.startswith('CONFER_')}}))\n")
    fake.chmod(0o755)
    return bin_dir


def run_entrypoint(bin_dir: Path, env: dict[str, str], *args: str
                   ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(ENTRYPOINT), *args], capture_output=True, text=True,
                          timeout=30, env={**env, "PATH": f"{bin_dir}:/usr/bin:/bin"})


def statefulset_env() -> dict[str, str]:
    """The plain (``value:``) variables of the StatefulSet's container."""
    (container,) = kind("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_entrypoint_derives_a_pods_member_from_its_name(fake_confer: Path) -> None:
    pod_env = {**image_env(), **statefulset_env(), "POD_NAMESPACE": "prod"}
    pod_env.pop("CONFER_CLUSTER_TOKEN")  # `confer-$(POD_NAMESPACE)`: kubelet expands it
    result = run_entrypoint(fake_confer, {**pod_env, "HOSTNAME": "confer-2"}, "--log-level",
                            "debug")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["argv"] == ["serve", "--log-level", "debug"]
    env = out["env"]
    dns = "confer-peer.prod.svc.cluster.local"
    assert env["CONFER_ID"] == "3"
    assert env["CONFER_NAME"] == "confer-2"
    assert env["CONFER_INITIAL_CLUSTER"] == ",".join(
        f"{i + 1}=confer-{i}@confer-{i}.{dns}:{PEER_PORT}" for i in range(3))
    assert env["CONFER_ADVERTISE_PEER"] == f"confer-2.{dns}:{PEER_PORT}"
    assert env["CONFER_ADVERTISE_CLIENT"] == f"confer-2.{dns}:{CLIENT_PORT}"
    # confer serve takes these settings, and they name this member.
    cfg = config.load_config(None, {}, environ=env)
    assert cfg.node_id == 3
    assert [(i, name) for i, name, _ in cfg.founders()] == [(1, "confer-0"), (2, "confer-1"),
                                                            (3, "confer-2")]
    assert dict((i, peer) for i, _, peer in cfg.founders())[3] == cfg.peer_url


def test_entrypoint_refuses_pods_outside_the_initial_cluster(fake_confer: Path) -> None:
    pod_env = {**image_env(), **statefulset_env()}
    for host, why in (("confer-3", "not one of the 3 initial members"),
                      ("confer", "does not end in -ORDINAL"),
                      ("confer-x", "does not end in -ORDINAL")):
        result = run_entrypoint(fake_confer, {**pod_env, "HOSTNAME": host})
        assert result.returncode == 2, (host, result.stdout)
        assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert result.stdout == ""


def test_entrypoint_advertises_the_host_name_for_wildcard_addresses(fake_confer: Path
                                                                     ) -> None:
    result = run_entrypoint(fake_confer, {**image_env(), "HOSTNAME": "abc123"})
    env = json.loads(result.stdout)["env"]
    assert env["CONFER_ADVERTISE_PEER"] == f"abc123:{PEER_PORT}"
    assert env["CONFER_ADVERTISE_CLIENT"] == f"abc123:{CLIENT_PORT}"
    assert "CONFER_ID" not in env and "CONFER_INITIAL_CLUSTER" not in env
    set_already = {**image_env(), "HOSTNAME": "abc123", "CONFER_ADVERTISE_PEER": "x:1"}
    env = json.loads(run_entrypoint(fake_confer, set_already).stdout)["env"]
    assert env["CONFER_ADVERTISE_PEER"] == "x:1"


def test_entrypoint_runs_other_commands_as_given(fake_confer: Path) -> None:
    result = run_entrypoint(fake_confer, {"HOSTNAME": "h"}, "confer", "status")
    assert json.loads(result.stdout)["argv"] == ["status"]


# -- compose ------------------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_runs_three_members_that_name_each_other() -> None:
    services = compose()["services"]
    assert sorted(services) == ["confer-1", "confer-2", "confer-3"]
    clusters = {s["environment"]["CONFER_INITIAL_CLUSTER"] for s in services.values()}
    assert len(clusters) == 1, "--initial-cluster must be the same on every founder"
    for name, svc in services.items():
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["hostname"] == name
        env = {k: str(v) for k, v in svc["environment"].items()}
        check_serve_args(svc.get("command", []), f"compose service {name}")
        cfg = config.load_config(None, {}, environ={**image_env(), **env})
        assert (cfg.node_id, cfg.name) == (int(name[-1]), name)
        assert cfg.peer_url == f"{name}:{PEER_PORT}"
        assert cfg.client_url == f"{name}:{CLIENT_PORT}"
        assert {(i, n, p) for i, n, p in cfg.founders()} == {
            (int(s[-1]), s, f"{s}:{PEER_PORT}") for s in services}
        assert svc["volumes"] == [f"{name}:{DATA_VOLUME}"]
        assert svc["healthcheck"]["test"] == ["CMD", "confer-healthcheck", "/health"]


def test_compose_publishes_client_and_http_ports_on_loopback_only() -> None:
    published = []
    for svc in compose()["services"].values():
        for spec in svc["ports"]:
            host_ip, host_port, container_port = spec.split(":")
            assert host_ip == "127.0.0.1", spec
            published.append(int(host_port))
            assert int(container_port) in (CLIENT_PORT, HTTP_PORT), "peers stay inside"
    assert len(set(published)) == len(published) == 6
    assert set(compose()["volumes"]) == set(compose()["services"])


# -- Kubernetes ---------------------------------------------------------------------------------
def k8s_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        out.extend(d for d in yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()) if d)
    return out


def kind(name: str) -> dict[str, Any]:
    (obj,) = [o for o in k8s_objects() if o["kind"] == name]
    return obj


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    assert sorted(o["kind"] for o in k8s_objects()) == [
        "PodDisruptionBudget", "Service", "Service", "StatefulSet"]


def test_statefulset_pods_find_each_other_through_the_headless_service() -> None:
    sts = kind("StatefulSet")
    services = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "Service"}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    # Members become ready only once they reach each other: their names must resolve first.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert statefulset_env()["PEER_SERVICE"] == headless["metadata"]["name"]
    assert int(statefulset_env()["INITIAL_CLUSTER_SIZE"]) == sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= labels.items()
    (client,) = [s for s in services.values() if s is not headless]
    assert [p["port"] for p in client["spec"]["ports"]] == [CLIENT_PORT]


def test_statefulset_container_probes_ports_volumes_and_security() -> None:
    sts = kind("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["enableServiceLinks"] is False  # no CONFER_PORT & co. from a Service "confer"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"client": CLIENT_PORT, "peer": PEER_PORT, "http": HTTP_PORT}
    probes = {k: (v["httpGet"]["path"], ports[v["httpGet"]["port"]])
              for k, v in container.items() if k.endswith("Probe")}
    assert probes == {"readinessProbe": ("/readyz", HTTP_PORT),
                      "livenessProbe": ("/livez", HTTP_PORT),
                      "startupProbe": ("/livez", HTTP_PORT)}
    check_serve_args(container.get("args", []), "the StatefulSet")
    check_serve_args(container.get("command", []), "the StatefulSet")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == DATA_VOLUME
    assert claim["spec"]["resources"]["requests"]["storage"]
    security = pod["securityContext"]
    uid = re.search(r"--uid (\d+)", " ".join(instructions("RUN")))
    assert uid
    assert security["runAsNonRoot"] is True and security["runAsUser"] == int(uid.group(1))
    assert security["fsGroup"] == int(uid.group(1))
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()


def test_pod_disruption_budget_takes_one_member_at_a_time() -> None:
    pdb = kind("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = kind("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# -- systemd ------------------------------------------------------------------------------------
UNIT = DEPLOY / "systemd" / "confer.service"


def unit_sections() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)  # SystemCallFilter= appears twice
    parser.optionxform = str  # keys keep their case (NoNewPrivileges)
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_settings() -> None:
    service = unit_sections()["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[:2] == ["/opt/confer/bin/confer", "serve"]
    check_serve_args(exec_start[2:], "confer.service")
    assert exec_start[2:] == ["--data-dir", "${STATE_DIRECTORY}"]
    assert service["User"] == "confer" and service["StateDirectory"] == "confer"
    assert service["ReadWritePaths"] == "/var/lib/confer"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].lstrip("-") == "/etc/confer/confer.env"
    assert service["TimeoutStopSec"]
    for option, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                          ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
        assert service[option] == value, option
    # The sample environment file holds settings, and no data dir (the unit's flag wins).
    sample = (DEPLOY / "systemd" / "confer.env").read_text()
    names = {line.split("=", 1)[0] for line in sample.splitlines()
             if line and not line.startswith("#")}
    assert names <= config.env_vars() and "CONFER_DATA_DIR" not in names
    sysusers = (DEPLOY / "systemd" / "confer.sysusers").read_text()
    assert re.search(r"^u confer ", sysusers, re.M)


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # .ci/run installs systemd where it is missing: without it this test fails (never skips).
    assert shutil.which("systemd-analyze"), "systemd-analyze is not installed (apt systemd)"
    # verify checks that ExecStart's program exists: point it at this checkout's confer.
    confer = Path(sys.executable).parent / "confer"
    assert confer.is_file()
    unit = tmp_path / "confer.service"
    unit.write_text(UNIT.read_text().replace("/opt/confer/bin/confer", str(confer)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    # An unknown or misspelt key is only a warning (exit 0): any line about the unit fails.
    about_unit = [line for line in (result.stdout + result.stderr).splitlines()
                  if "confer.service" in line]
    assert result.returncode == 0 and not about_unit, result.stdout + result.stderr


# -- three members started as compose would start them, on loopback -------------------------
@dataclass
class EntrypointNode(NodeProcess):
    """A member started through deploy/docker-entrypoint.sh with CONFER_* variables only."""

    settings: dict[str, str] = field(default_factory=dict)

    def start(self, extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.log_path = self.data_dir.parent / f"node{self.node_id}.log"
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["/bin/sh", str(ENTRYPOINT), *(extra or [])], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PATH": path, **self.settings, **(env or {})})


def loopback_settings(service: str, env: dict[str, str], ports: dict[str, tuple[int, int, int]],
                      data_dir: Path) -> dict[str, str]:
    """A compose service's variables with every service's address moved to loopback ports
    (ports: service -> client, peer, HTTP port)."""

    def local(value: str) -> str:
        for name, (client, peer, _) in ports.items():
            value = value.replace(f"{name}:{PEER_PORT}", f"127.0.0.1:{peer}")
            value = value.replace(f"{name}:{CLIENT_PORT}", f"127.0.0.1:{client}")
        return value

    client, peer, http = ports[service]
    return {**{k: local(str(v)) for k, v in env.items()},
            "CONFER_DATA_DIR": str(data_dir), "CONFER_LISTEN_CLIENT": f"127.0.0.1:{client}",
            "CONFER_LISTEN_PEER": f"127.0.0.1:{peer}",
            "CONFER_LISTEN_METRICS": f"127.0.0.1:{http}", "CONFER_TICK_MS": "50"}


@contextlib.contextmanager
def compose_on_loopback(base: Path) -> Iterator[list[EntrypointNode]]:
    services = compose()["services"]
    ports = {name: (free_port(), free_port(), free_port()) for name in services}
    nodes = []
    for name, svc in services.items():
        node = EntrypointNode(int(name[-1]), base / name, ports[name][0], ports[name][1])
        node.settings = loopback_settings(name, svc["environment"], ports, node.data_dir)
        nodes.append(node)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready(60)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        for node in nodes:
            print(f"--- {node.data_dir.name} ---\n{node.log_text()[-3000:]}")


def healthcheck(node: EntrypointNode, path: str) -> subprocess.CompletedProcess[str]:
    """deploy/healthcheck.py, as the image runs it, for ``node``'s HTTP listener."""
    return subprocess.run([sys.executable, str(HEALTHCHECK), path],
                          env={**os.environ, **node.settings}, capture_output=True, text=True,
                          timeout=30)


def test_three_members_started_through_the_entrypoint_form_a_cluster(tmp_path: Path) -> None:
    with compose_on_loopback(tmp_path) as nodes:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = [n.status(timeout=1.0) for n in nodes]
            leaders = {s.leader_id for s in statuses if s is not None}
            if None not in statuses and len(leaders) == 1 and 0 not in leaders:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no agreed leader within 60 s: {statuses}")
        # The image's health check, against each member's HTTP listener. (/health waits for
        # a quorum round, which a member just told of its leader may not complete yet.)
        for node in nodes:
            result = healthcheck(node, "/health")
            deadline = time.monotonic() + 30
            while result.returncode != 0 and time.monotonic() < deadline:
                time.sleep(0.5)
                result = healthcheck(node, "/health")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["health"] == "true"
        # Each member has the id, name and addresses compose gives it (moved to loopback);
        # a member publishes its client address through the log once it has a leader.
        expected = {(n.node_id, n.data_dir.name, n.peer_addr, n.client_addr) for n in nodes}
        with confer.Client([nodes[0].client_addr]) as client:
            deadline = time.monotonic() + 30
            while (members := {(m.id, m.name, m.peer_addr, m.client_addr)
                               for m in client.member_list()}) != expected:
                assert time.monotonic() < deadline, members
                time.sleep(0.2)
        # The entrypoint's process is confer itself (exec): SIGTERM stops it cleanly.
        assert nodes[2].stop() == 0
        result = healthcheck(nodes[2], "/livez")
        assert result.returncode == 1 and "/livez" in result.stderr
