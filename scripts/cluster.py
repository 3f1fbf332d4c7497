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
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.procs import wait_port  # noqa: E402


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

    # Handlers first, so Ctrl+C during start-up also stops cleanly. Children run in their
    # own sessions: Ctrl+C reaches only this script, which stops the gateways (they record
    # cursors in Redis) before Redis itself.
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

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
        ],
        start_new_session=True,
    )
    code = 0
    try:
        wait_port(args.redis_port, redis)
        url = f"redis://127.0.0.1:{args.redis_port}/0"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        for i in range(args.gateways):
            if stopping:
                break
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
                start_new_session=True,
            )
            procs.append(gw)
            wait_port(port, gw)
            print(f"gateway {i + 1}: telnet 127.0.0.1 {port}", flush=True)
        else:
            print(f"redis: {url}; Ctrl+C stops everything", flush=True)
        while not stopping:
            if any(p.poll() is not None for p in [redis, *procs]):
                print("a process exited; stopping the rest", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    finally:
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
    try:
        sys.exit(main())
    except (RuntimeError, TimeoutError) as exc:
        sys.exit(f"cluster: {exc}")
