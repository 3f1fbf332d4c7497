"""The Dockerfile and the compose file agree with each other and with the gateway's settings.

There is no Docker engine here, so nothing is built or run: the Dockerfile is read as text,
the compose file as YAML, and Debian's `docker-compose` (1.29) validates the compose file
with `docker-compose config`, which needs no engine.

Only `from gateway.settings import Settings` and its dataclass field names and defaults are
relied on: option `--x-y` is field `x_y` and variable `CHAT_X_Y` (`REDIS_URL` for redis_url).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.settings import Settings
from scripts.procs import free_port, stop_process, wait_port

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
#: Listeners named in PROTOCOL.md (now in Settings too): their defaults must match these.
DOORS = {"web_port": 8080, "irc_port": 6667}
#: What only tests and checks need; the image must not install it.
DEV_ONLY = ("pytest", "hypothesis", "ruff")


def _field_for_var(var: str) -> str | None:
    if var == "REDIS_URL":
        return "redis_url"
    if var.startswith("CHAT_"):
        return var[len("CHAT_") :].lower()
    return None


def _default(name: str) -> object:
    if name in FIELDS:
        return FIELDS[name].default
    return DOORS[name]


# --- the Dockerfile, read as text ---------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def _all(kind: str) -> list[str]:
    return [args for word, args in _instructions() if word == kind]


def _last(kind: str) -> str | None:
    found = _all(kind)
    return found[-1] if found else None


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _all("ENV"):
        words = shlex.split(args)
        if words and "=" not in words[0]:  # legacy form: ENV KEY value
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, sep, value = word.partition("=")
            assert sep, f"ENV {args!r}: expected KEY=value"
            env[key] = value
    return env


def _exec_form(args: str | None) -> list[str]:
    if args is None:
        return []
    args = args.strip()
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


def _command_line() -> list[str]:
    """ENTRYPOINT followed by CMD, as the container runs them."""
    return _exec_form(_last("ENTRYPOINT")) + _exec_form(_last("CMD"))


def _options(argv: list[str]) -> dict[str, str]:
    """The `--name value` / `--name=value` options after server.py."""
    starts = [i for i, a in enumerate(argv) if a.endswith("server.py")]
    assert starts, f"the image does not run server.py: {argv}"
    rest = argv[starts[0] + 1 :]
    opts: dict[str, str] = {}
    i = 0
    while i < len(rest):
        word = rest[i]
        assert word.startswith("--"), f"unexpected argument {word!r} in {argv}"
        name, sep, value = word[2:].partition("=")
        if not sep:
            i += 1
            value = rest[i]
        opts[name.replace("-", "_")] = value
        i += 1
    return opts


def _effective() -> dict[str, str]:
    """Each setting's value in the container: option, else ENV, else the default."""
    env = _env()
    opts = _options(_command_line())
    values = {name: str(f.default) for name, f in FIELDS.items()}
    for var, value in env.items():
        name = _field_for_var(var)
        if name is not None and name in FIELDS:
            values[name] = value
    values.update(opts)
    return values


def _healthcheck_port(env: dict[str, str]) -> int:
    check = _last("HEALTHCHECK")
    assert check is not None, "the image has no HEALTHCHECK"
    assert check.strip().upper() != "NONE"
    cmd = check[check.upper().index("CMD ") + len("CMD ") :]
    text = " ".join(_exec_form(cmd))
    assert "/healthz" in text, text
    assert "127.0.0.1" in text or "localhost" in text, text
    literal = re.search(r":(\d+)/healthz", text)
    if literal:
        return int(literal.group(1))
    # or the probe reads the port from the variable that sets it
    assert "CHAT_METRICS_PORT" in text, text
    return int(env["CHAT_METRICS_PORT"])


def test_dockerfile_variables_and_options_are_settings() -> None:
    env = _env()
    for var in env:
        name = _field_for_var(var)
        if name is not None:
            assert name in FIELDS, f"Dockerfile sets {var}, but Settings has no {name}"
    opts = _options(_command_line())
    for name in opts:
        assert name in FIELDS, f"Dockerfile passes --{name.replace('_', '-')}, not a setting"
    # An option on the command line would beat its variable, so `docker run -e` and
    # compose's environment could not change it: settings belong in ENV.
    assert not opts, f"put these in ENV instead of on the command line: {opts}"


def test_dockerfile_listens_publicly_for_chat_and_turns_metrics_on() -> None:
    values = _effective()
    assert values["host"] == "0.0.0.0", "in a container 127.0.0.1 is unreachable from outside"
    assert int(values["port"]) > 0
    assert int(values["metrics_port"]) > 0, "the health check needs the metrics port on"


def test_dockerfile_health_check_probes_the_metrics_port() -> None:
    values = _effective()
    assert _healthcheck_port(_env()) == int(values["metrics_port"])


def test_dockerfile_exposes_the_chat_port_and_not_metrics() -> None:
    values = _effective()
    exposed = {int(p.split("/")[0]) for args in _all("EXPOSE") for p in args.split()}
    assert int(values["port"]) in exposed
    # metrics and /healthz are for the operator: publishing them is a deliberate choice
    assert int(values["metrics_port"]) not in exposed
    listeners = {
        int(value)
        for name, value in values.items()
        if name.endswith("_port") and name != "metrics_port" and value not in ("", "None")
    }
    listeners.add(int(values["port"]))
    assert exposed <= listeners, f"EXPOSE {sorted(exposed - listeners)}: nothing listens there"


def test_dockerfile_runs_as_a_user_other_than_root() -> None:
    user = _last("USER")  # the last USER is the one the container runs as
    assert user is not None, "the image runs as root"
    assert user.split(":")[0] not in ("root", "0")


def test_dockerfile_health_check_passes_against_the_image_command(tmp_path) -> None:
    """Run the image's ENTRYPOINT with its ENV here (on loopback and free ports), then its
    HEALTHCHECK command: what `docker run` would do, without Docker."""
    env = {**os.environ, **_env()}
    env.update(
        CHAT_HOST="127.0.0.1",
        CHAT_PORT=str(free_port()),
        CHAT_METRICS_PORT=str(free_port()),
        CHAT_WEB_PORT=str(free_port()),
        CHAT_SCRYPT_LOG_N="10",
    )
    env.pop("REDIS_URL", None)  # the embedded store, as a plain `docker run` has
    check = _last("HEALTHCHECK") or ""
    probe = _exec_form(check[check.upper().index("CMD ") + len("CMD ") :])
    assert probe[0] == "python3", probe
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        _command_line(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_port(int(env["CHAT_METRICS_PORT"]), proc=proc)
        result = subprocess.run(
            [sys.executable, *probe[1:]], env=env, capture_output=True, text=True, timeout=10
        )
        assert result.returncode == 0, result.stderr
    finally:
        stop_process(proc)
        log.close()


def test_image_installs_only_runtime_requirements() -> None:
    installs = [args for args in _all("RUN") if "pip" in args and "install" in args]
    assert installs, "the image installs no requirements"
    for args in installs:
        assert "requirements-dev" not in args
        assert "requirements.txt" in args
        for tool in DEV_ONLY:
            assert tool not in args
    runtime = (ROOT / "requirements.txt").read_text().lower()
    pins = [re.split(r"[\[=<>~ ]", line.strip())[0] for line in runtime.splitlines()]
    for tool in DEV_ONLY:
        assert tool not in pins, f"{tool} is a test tool: move it to requirements-dev.txt"
    dev = [
        line.strip()
        for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert dev[0] == "-r requirements.txt"
    for tool in DEV_ONLY:
        assert any(line.lower().startswith(tool) for line in dev), tool
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-r requirements-dev.txt" in ci


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether a top-level path is left out of the build context (last match wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_out_git_and_tests_but_not_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for unwanted in (".git", "tests"):
        assert _ignored(unwanted, patterns), unwanted
    for args in _all("COPY"):
        words = [w for w in _exec_form(args) if not w.startswith("--")]
        for source in words[:-1]:
            source = source.rstrip("/")
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
            assert not _ignored(source, patterns), f"COPY {source}, but .dockerignore drops it"


# --- the compose file ---------------------------------------------------------------------


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _services(profile: str | None = None) -> dict[str, dict]:
    """The services `docker compose up` starts (profile None), or those of one profile."""
    return {
        name: s
        for name, s in _compose()["services"].items()
        if (profile in s["profiles"] if "profiles" in s else profile is None)
    }


def _gateways(profile: str | None = None) -> dict[str, dict]:
    return {name: s for name, s in _services(profile).items() if "build" in s}


def _one_shots() -> set[str]:
    """Jobs that run once (restart "no") and that others wait for to have succeeded."""
    waited = {
        dep
        for s in _compose()["services"].values()
        for dep, cond in (s.get("depends_on") or {}).items()
        if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully"
    }
    return {n for n in waited if _compose()["services"][n].get("restart") == "no"}


def _mapping(spec: str | dict) -> tuple[str, int, int]:
    """(host ip or "", published, target) of one `ports:` entry."""
    if isinstance(spec, dict):
        return spec.get("host_ip", ""), int(spec["published"]), int(spec["target"])
    parts = str(spec).split("/")[0].split(":")
    assert len(parts) in (2, 3), f"port {spec!r}: give host port and container port"
    ip = parts[0] if len(parts) == 3 else ""
    return ip, int(parts[-2]), int(parts[-1])


def test_compose_config_is_valid() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        message = "docker-compose not installed (apt-get install docker-compose)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [exe, "-f", "docker-compose.yml", "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_compose_redis_image_is_pinned() -> None:
    image = _compose()["services"]["redis"]["image"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-[\w.]+)?(@sha256:[0-9a-f]{64})?", image) or (
        re.fullmatch(r"redis@sha256:[0-9a-f]{64}", image)
    ), f"{image}: pin a full version"


def test_compose_every_service_has_a_health_check() -> None:
    for name, service in _compose()["services"].items():
        if name in _one_shots():
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name


def test_compose_gateway_variables_are_settings_or_announced_doors() -> None:
    for name, service in _gateways().items():
        env = service["environment"]
        assert env["CHAT_HOST"] == "0.0.0.0", name
        for var in env:
            field = _field_for_var(var)
            if field is not None:
                assert field in FIELDS or field in DOORS, f"{name}: {var} is not a setting"
    for door, port in DOORS.items():
        if door in FIELDS:
            assert FIELDS[door].default == port, door


def _published(profile: str | None) -> tuple[dict[str, list[int]], list[int]]:
    """Host ports of the gateways of `profile`: per listener, and metrics (on loopback)."""
    published: dict[str, list[int]] = {"port": [], "web_port": [], "irc_port": []}
    metrics: list[int] = []
    for name, service in _gateways(profile).items():
        env = service["environment"]
        targets = {
            field: int(env.get("CHAT_" + field.upper(), _default(field)))
            for field in ("port", "web_port", "irc_port", "metrics_port")
        }
        assert targets["metrics_port"] > 0, f"{name}: its health check needs metrics on"
        check = " ".join(service["healthcheck"]["test"])
        assert f":{targets['metrics_port']}/healthz" in check, f"{name}: {check}"
        for spec in service["ports"]:
            ip, host_port, target = _mapping(spec)
            if target == targets["metrics_port"]:
                assert ip == "127.0.0.1", f"{name}: metrics published on all interfaces"
                metrics.append(host_port)
                continue
            kinds = [field for field in published if targets[field] == target]
            assert kinds, f"{name}: {spec} publishes no listener of the gateway"
            published[kinds[0]].append(host_port)
    return published, metrics


def test_compose_ports_chat_web_irc_public_metrics_on_loopback() -> None:
    published, metrics = _published(None)
    assert sorted(published["port"]) == [8001, 8002, 8003]
    assert sorted(published["web_port"]) == [8081, 8082, 8083]
    assert sorted(published["irc_port"]) == [6667, 6668, 6669]
    assert sorted(metrics) == [9101, 9102, 9103]


def test_ci_installs_docker_compose() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'command -v docker-compose .*missing="\$missing docker-compose"', ci)


# --- the compose file's `cluster` profile: a Redis Cluster and gateways on it ---------------


def _redis_options(command: list[str]) -> dict[str, str]:
    """`--name value` options of a redis-server command line."""
    assert command[0] == "redis-server", command
    words = command[1:]
    assert len(words) % 2 == 0 and all(w.startswith("--") for w in words[::2]), command
    return {k[2:]: v for k, v in zip(words[::2], words[1::2], strict=True)}


def _cluster_nodes() -> dict[str, tuple[str, int]]:
    """Cluster node service -> (its fixed address, its port)."""
    nodes = {}
    for name, service in _services("cluster").items():
        command = service.get("command")
        if not (isinstance(command, list) and command and command[0] == "redis-server"):
            continue
        opts = _redis_options(command)
        assert opts.get("cluster-enabled") == "yes", name
        (network,) = service["networks"].values()
        nodes[name] = (network["ipv4_address"], int(opts.get("port", 6379)))
    return nodes


def test_compose_cluster_has_six_cluster_enabled_nodes_probed_on_their_port() -> None:
    services = _compose()["services"]
    nodes = _cluster_nodes()
    assert len(nodes) == 6
    assert len({ip for ip, _ in nodes.values()}) == 6, "two nodes share an address"
    networks = _compose()["networks"]
    for name, (ip, port) in nodes.items():
        service = services[name]
        # One pinned Redis for the whole file.
        assert service["image"] == services["redis"]["image"], name
        opts = _redis_options(service["command"])
        assert opts["cluster-config-file"] and "/" not in opts["cluster-config-file"], name
        assert int(opts["cluster-node-timeout"]) <= 15000, name
        # The bus is port + 10000 unless set: no other port may be put there.
        assert int(opts.get("cluster-port", 0)) in (0, port + 10000), name
        assert opts.get("appendonly") == "yes", "a restarted node would come back empty"
        volumes = service.get("volumes", [])
        assert any(str(v).endswith(":/data") for v in volumes), f"{name}: nodes.conf is lost"
        assert "ports" not in service, f"{name}: the cluster is for the gateways only"
        check = service["healthcheck"]["test"]
        assert check[:2] == ["CMD", "redis-cli"] and "ping" in check, name
        probed = int(check[check.index("-p") + 1]) if "-p" in check else 6379
        assert probed == port, f"{name}: health check on {probed}, node on {port}"
        (net,) = service["networks"]
        subnet = networks[net]["ipam"]["config"][0]["subnet"]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(subnet), name


def test_compose_cluster_init_creates_the_cluster_from_every_node_once() -> None:
    services = _compose()["services"]
    nodes = _cluster_nodes()
    (init,) = (n for n in _services("cluster") if n in _one_shots())
    service = services[init]
    assert service["image"] == services["redis"]["image"]
    waits = service["depends_on"]
    assert set(waits) == set(nodes), "the init must wait for every node"
    assert all(w["condition"] == "service_healthy" for w in waits.values())
    command = service["command"]
    script = command[-1] if command[:2] == ["sh", "-c"] else " ".join(command)
    words = script.split()
    create = words.index("create")
    assert words[create - 2 : create] == ["redis-cli", "--cluster"], script
    addrs = []
    for word in words[create + 1 :]:
        if word.startswith("--"):
            break
        addrs.append(word)
    assert sorted(addrs) == sorted(f"{ip}:{port}" for ip, port in nodes.values()), script
    assert words[words.index("--cluster-replicas") + 1] == "1"
    assert "--cluster-yes" in words, "redis-cli would wait for a 'yes' nobody types"
    assert len(addrs) // 2 >= 3, "a cluster needs 3 masters"
    # A second `up` finds the cluster made: it checks before creating, then waits for ok.
    assert script.index("cluster_slots_assigned:16384") < script.index("--cluster create")
    assert "cluster_state:ok" in script
    for i, word in enumerate(words):  # every node it asks is one of the nodes
        if word == "-h":
            assert (words[i + 1], int(words[i + 3])) in nodes.values(), script


def test_compose_cluster_gateways_seed_every_node_and_publish_other_ports() -> None:
    nodes = _cluster_nodes()
    (init,) = (n for n in _services("cluster") if n in _one_shots())
    gateways = _gateways("cluster")
    assert len(gateways) == 3
    for name, service in gateways.items():
        url = service["environment"]["REDIS_URL"]
        assert url.startswith("redis://"), name
        seeds = [s.rsplit(":", 1) for s in url[len("redis://") :].split("/")[0].split(",")]
        assert sorted((host, int(port)) for host, port in seeds) == sorted(
            (node, port) for node, (_, port) in nodes.items()
        ), f"{name}: {url} does not list every node"
        assert service["depends_on"] == {init: {"condition": "service_completed_successfully"}}, (
            name
        )
        node_networks = {n for s in nodes for n in _compose()["services"][s]["networks"]}
        assert node_networks <= set(service["networks"]), f"{name} cannot reach the nodes"
    published, metrics = _published("cluster")
    assert sorted(published["port"]) == [8011, 8012, 8013]
    assert sorted(published["web_port"]) == [8091, 8092, 8093]
    assert sorted(published["irc_port"]) == [6677, 6678, 6679]
    assert sorted(metrics) == [9111, 9112, 9113]
    # Both stacks run side by side (`--profile cluster up` starts the default one too).
    everywhere = [
        _mapping(spec)[1]
        for service in _compose()["services"].values()
        for spec in service.get("ports", [])
    ]
    assert len(everywhere) == len(set(everywhere)), "a host port is published twice"


def test_compose_cluster_profile_config_is_valid() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        message = "docker-compose not installed (apt-get install docker-compose)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [exe, "-f", "docker-compose.yml", "--profile", "cluster", "config", "--services"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    services = set(result.stdout.split())
    assert set(_cluster_nodes()) | set(_gateways("cluster")) <= services
    assert set(_gateways(None)) <= services
