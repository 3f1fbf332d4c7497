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
    #: Seconds an account must exist before its complaints count: fresh throwaway accounts
    #: cannot ban; costs a real newcomer this long before /ban works for them.
    complaint_min_age: int = 3600
    #: Complaints one user may make per hour (0: no limit): one account cannot sweep the
    #: whole user list; costs nothing to a user who complains about a few.
    complaints_per_hour: int = 10
    #: Complaints about one user counted from one address (an IPv6 /64) per ban period (0: no
    #: limit): sock puppets on one machine count once; costs users behind one NAT their
    #: second voice (raise it for a campus or an office).
    complaints_per_address: int = 1
    #: A user banned for complaints: their last this-many login addresses may not register
    #: new accounts until the ban ends (0: off). Costs one small sorted set per user and
    #: newcomers who share such an address (existing accounts still log in).
    ban_address_memory: int = 4
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
    #: Connections open on this gateway at once (line and web); beyond it a connection is
    #: told `! server busy: this gateway is full ...` and closed, so its client tries
    #: another gateway instead of failing on a descriptor limit. -1: the process's
    #: descriptor limit minus FD_RESERVE (kept for Redis, listeners, files); 0: no limit.
    max_connections: int = -1
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
    #: Failed logins (wrong passwords or tokens) allowed per nickname from one address
    #: within `login_fail_window`; each attempt is counted before its hash is checked, so
    #: parallel connections get no more. Costs a user who mistypes this often a wait of up
    #: to the window at that address (a success there resets it). 0: no limit.
    max_login_failures: int = 10
    login_fail_window: int = 900
    #: Failed logins allowed per nickname from all the addresses it never logged in from,
    #: within the window: bounds guesses spread over many addresses (a botnet) at one
    #: account; never locks the owner out of an address they logged in from (30 days).
    max_login_failures_per_nick: int = 100
    #: Distinct nicknames whose logins may fail from one address (IPv6: its /64) within the
    #: window, counting only nicknames that never logged in there: bounds one address
    #: spraying guesses over many accounts; one user's typos count once. Costs a NAT
    #: shared by this many mistyping newcomers a wait. 0: no limit.
    max_failed_nicks_per_ip: int = 10
    #: scrypt cost as log2(N); 14 is 16 MiB and about 80 ms of one core per login.
    scrypt_log_n: int = 14
    #: Seconds a resume token (/token) is valid: its holder logs in without the password
    #: until then. Each costs one ~100-byte field in Redis (at most `credentials.MAX_TOKENS`
    #: per user).
    token_ttl: int = 30 * 86400
    #: Seconds between cursor flushes to Redis (the most a crash can show twice).
    cursor_flush: float = 1.0
    #: The web page and its WebSocket (`/ws`) on this port; 0 turns the web door off.
    web_port: int = 8080
    #: Comma-separated origins allowed to open the WebSocket (e.g. https://chat.example);
    #: empty: only the page's own origin. Browsers send Origin; other clients may omit it.
    web_origins: str = ""
    #: The IRC door (any IRC client: docs/IRC.md) on this port; 0 turns it off.
    irc_port: int = 6667
    #: The IRC door over TLS on this port (0: off; 6697 is usual), with the TLS options
    #: below (`--tls-cert`, `--tls-key`).
    irc_tls_port: int = 0
    #: A second port serving the same line protocol over TLS (0: none), with the PEM
    #: certificate chain and key files. TLS costs about 30 KiB of memory per connection
    #: and a handshake (a few ms of one core) per connect.
    tls_port: int = 0
    tls_cert: str = ""
    tls_key: str = ""
    #: CA file trusted for a `rediss://` Redis (unless the URL has `ssl_ca_certs=`);
    #: empty: the system's trust store.
    redis_ca: str = ""
    #: Seconds to wait for any one reply from Redis. A post whose reply does not come in
    #: time may still have been stored: the sender is told so, not "not sent".
    store_timeout: float = 10.0
    #: Milliseconds a post waits for one replica to have it (`WAIT 1 <ms>`) before the
    #: sender's echo; 0: no wait. Redis replicates asynchronously, so without it a master
    #: that dies may take its last acknowledged messages with it; with it, an echoed
    #: message survives a failover, and one no replica took in time is reported to the
    #: sender as possibly not stored. Costs each post about a replica round trip.
    redis_wait_replica: int = 0
    #: Messages kept per conversation (exact MAXLEN trim on every post). Redis holds at
    #: most (chats + private conversations) x this x (text + ~100 bytes).
    max_stored: int = 10000
    #: Stored lines shown at login (the newest; the user is told what was left out). The
    #: login reads at most 8 conversations x (this + 1) messages at a time.
    max_backlog: int = 500
    #: Chats one user may be in (#general included); bounds join/leave work per account.
    max_user_chats: int = 100
    #: Chats that may exist at once; a join that would create one more is refused.
    max_chats: int = 10000
    #: Chats one user may create per hour (0: none but existing ones can be joined).
    chat_creations: int = 10
    #: Chats /get_chats lists (the largest; "and N more"): bounds its reply and its cost.
    chats_listed: int = 50
    #: Accounts registered per address per hour (0: no limit).
    max_registrations: int = 20
    #: Seconds an account lives without a login; then it, its keys and memberships go.
    account_ttl: int = 180 * 86400
    #: Entries kept in the audit stream (complaints, bans, kicks, admin actions), trimmed
    #: approximately; about 200 bytes each in Redis. Keep it above what one message
    #: lifetime produces so the trail covers at least that long.
    audit_keep: int = 100000
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
            "complaint_min_age": self.complaint_min_age >= 0,
            "complaints_per_hour": self.complaints_per_hour >= 0,
            "complaints_per_address": self.complaints_per_address >= 0,
            "ban_address_memory": self.ban_address_memory >= 0,
            "max_line": self.max_line >= 64,
            "max_output": self.max_output >= 4096,
            "rate": self.rate >= 0,
            "burst": self.burst >= 1,
            "scrypt_log_n": 1 <= self.scrypt_log_n <= 20,
            "token_ttl": self.token_ttl >= 1,
            "store_timeout": self.store_timeout > 0,
            "redis_wait_replica": self.redis_wait_replica >= 0,
            "max_stored": self.max_stored >= 1,
            "max_backlog": self.max_backlog >= 1,
            "max_user_chats": self.max_user_chats >= 1,
            "max_chats": self.max_chats >= 1,
            "chat_creations": self.chat_creations >= 0,
            "chats_listed": self.chats_listed >= 1,
            "max_registrations": self.max_registrations >= 0,
            "account_ttl": self.account_ttl >= 60,
            "audit_keep": self.audit_keep >= 100,
            "max_pending_hashes": self.max_pending_hashes >= 1,
            "max_connections": self.max_connections >= -1,
            "hash_threads": self.hash_threads >= 1,
            "max_login_failures": self.max_login_failures >= 0,
            "max_login_failures_per_nick": self.max_login_failures_per_nick >= 0,
            "max_failed_nicks_per_ip": self.max_failed_nicks_per_ip >= 0,
            "login_fail_window": self.login_fail_window >= 1,
            "keepalive_interval": self.keepalive_interval >= 1,
            "keepalive_count": self.keepalive_count >= 1,
        }
        if self.tls_port and not (self.tls_cert and self.tls_key):
            raise SystemExit("invalid setting: --tls-port needs --tls-cert and --tls-key")
        if self.irc_tls_port and not (self.tls_cert and self.tls_key):
            raise SystemExit("invalid setting: --irc-tls-port needs --tls-cert and --tls-key")
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
