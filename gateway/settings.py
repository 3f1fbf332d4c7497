"""One settings object: every option, its environment variable and its default.

Each limit says what it costs next to its default, so an operator can size a gateway.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    #: None: an embedded in-process store (fakeredis behind a loopback RESP port).
    redis_url: str | None = None
    #: Messages shown to a newcomer, by /chats and by /history without n.
    history: int = 20
    #: Seconds a message lives; streams are trimmed exactly to this.
    message_ttl: int = 3600
    ban_threshold: int = 3
    ban_duration: int = 14400
    #: Longest input line in bytes; a longer one is dropped as it arrives, so this also
    #: bounds the input buffer of each connection.
    max_line: int = 4096
    #: Bytes queued for one slow reader before it is disconnected ("SendQ exceeded").
    #: The worst case memory of a gateway is about connections x this.
    max_output: int = 1 << 20
    #: Messages per second a user may send, summed over all their devices; 0 turns the
    #: limit off. `burst` messages may be sent at once after a quiet period.
    rate: float = 5.0
    burst: int = 20
    #: Seconds a connection may take to log in before it is closed.
    login_timeout: float = 60.0
    #: Connections from one IP address at once (0: no limit).
    max_per_ip: int = 100
    #: Connections still logging in, on this gateway, at once (0: no limit).
    max_pending_logins: int = 2000
    #: Connections still logging in from one IP address at once (0: no limit), so a few
    #: addresses cannot fill `max_pending_logins` for everyone; costs NAT users who all
    #: connect in the same second a retry.
    max_pending_per_ip: int = 20
    #: Password hashes waiting or running at once on this gateway; beyond it a login gets
    #: `! server busy` and may retry. Each waits about 80 ms x this / `hash_threads`.
    max_pending_hashes: int = 64
    #: Threads hashing passwords (each scrypt holds one core and 16 MiB while it runs).
    hash_threads: int = 2
    #: Failed logins allowed per nickname and per address within `login_fail_window`.
    max_login_failures: int = 10
    login_fail_window: int = 900
    #: scrypt cost as log2(N); 14 is 16 MiB and about 80 ms of one core per login.
    scrypt_log_n: int = 14
    #: Seconds between cursor flushes to Redis (the most a crash can show twice).
    cursor_flush: float = 1.0
    #: HTTP port for /metrics and /healthz; 0 turns it off.
    metrics_port: int = 0
    #: Address the metrics port binds: loopback by default, so /metrics is not public even
    #: when the chat listens on 0.0.0.0.
    metrics_host: str = "127.0.0.1"
    #: TCP keepalive on every accepted socket: first probe after this many idle seconds,
    #: then `keepalive_count` probes `keepalive_interval` s apart; a vanished peer is
    #: dropped after about idle + count x interval (90 s); an idle peer that is there
    #: answers the probes and stays. 0 turns keepalive off.
    keepalive_idle: int = 60
    keepalive_interval: int = 10
    keepalive_count: int = 3
    log_level: str = "INFO"

    @classmethod
    def from_args(
        cls, argv: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Settings:
        env = dict(os.environ if env is None else env)
        parser = argparse.ArgumentParser(description="Chat gateway")
        for f in fields(cls):
            opt = "--" + f.name.replace("_", "-")
            var = "CHAT_" + f.name.upper() if f.name != "redis_url" else "REDIS_URL"
            kind = _type_of(f.type)
            default = env.get(var, f.default)
            parser.add_argument(
                opt,
                type=kind,
                default=kind(default) if default is not None else None,
                help=f"env {var}, default {f.default}",
            )
        ns = parser.parse_args(argv)
        settings = cls(**vars(ns))
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = {
            "history": self.history >= 1,
            "message_ttl": self.message_ttl >= 1,
            "ban_threshold": self.ban_threshold >= 1,
            "ban_duration": self.ban_duration >= 1,
            "max_line": self.max_line >= 64,
            "max_output": self.max_output >= 4096,
            "rate": self.rate >= 0,
            "burst": self.burst >= 1,
            "scrypt_log_n": 1 <= self.scrypt_log_n <= 20,
            "max_pending_hashes": self.max_pending_hashes >= 1,
            "hash_threads": self.hash_threads >= 1,
            "keepalive_interval": self.keepalive_interval >= 1,
            "keepalive_count": self.keepalive_count >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise SystemExit(f"invalid setting: {', '.join(bad)}")


def _type_of(annotation: object) -> type:
    text = str(annotation)
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str
