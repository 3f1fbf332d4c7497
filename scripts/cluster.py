"""Run the compose topology as local processes: redis-server plus N gateways.

    python3 scripts/cluster.py                 # redis on 6390, gateways on 8001-8003
    python3 scripts/cluster.py --gateways 2 --redis-port 6391 --first-port 9001

Redis runs with append-only persistence (appendfsync everysec) in ./run/redis. Ctrl+C
stops the gateways (each says `* server shutting down`), then Redis, and exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--first-port", type=int, default=8001)
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--metrics-first-port", type=int, default=9101)
    parser.add_argument("--data-dir", default=str(ROOT / "run" / "redis"))
    args, gateway_args = parser.parse_known_args()

    redis_exe = shutil.which("redis-server")
    if redis_exe is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server)")
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    redis = subprocess.Popen(
        [
            redis_exe,
            "--port",
            str(args.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            args.data_dir,
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ]
    )
    wait_port(args.redis_port, redis)
    url = f"redis://127.0.0.1:{args.redis_port}/0"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    for i in range(args.gateways):
        port = args.first_port + i
        gw = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "server.py"),
                "--port",
                str(port),
                "--redis-url",
                url,
                "--metrics-port",
                str(args.metrics_first_port + i),
                *gateway_args,
            ],
            env=env,
        )
        wait_port(port, gw)
        procs.append(gw)
        print(f"gateway {i + 1}: telnet 127.0.0.1 {port}", flush=True)
    print(f"redis: {url}; Ctrl+C stops everything", flush=True)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        if any(p.poll() is not None for p in [redis, *procs]):
            print("a process exited; stopping the rest", file=sys.stderr)
            code = 1
            break
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            rc = p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = 1
        code = code or rc
    redis.send_signal(signal.SIGTERM)
    redis.wait(15)
    print("stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
