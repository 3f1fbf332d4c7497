"""The embedded store: a fakeredis server (with Lua) on a loopback port in this process.

The gateway then runs exactly the code it runs against real Redis, pub/sub included.

With a data file (the gateway's `--data`), what it holds survives a restart:
the file is loaded at start, and a thread writes a snapshot at most once a `SAVE_EVERY`
seconds when something worth keeping changed since the last one (heartbeats and
connection counts alone do not count), and once more at shutdown. A snapshot is written to
a temporary file in the same directory, flushed to disk and renamed over the old one, so a
crash leaves the last complete snapshot: at most about `SAVE_EVERY` of changes are lost.
A lock file beside it keeps a second gateway from using the same file.

The snapshot is every key of database 0 with its expiry, pickled: only this process's own
files are ever read (the directory is created 0700, the file 0600).

The loopback port is reachable by every local user, so the store admits only this process:
Redis's `default` user is switched off and the one user it serves logs in with a password
made at start that only this process's URL holds. Another process that finds the port gets
`User disabled` for everything, where it could read every private message and password hash
and make itself a moderator.

The operator's tool reaches a running embedded gateway the same way the data is protected:
while it runs, the gateway keeps its store's URL in a key file beside the data file
(`<data>.admin`, 0600 in a 0700 directory: only the account that runs the gateway, which
can read the data file anyway, can read it), removed at shutdown (`admin_url`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import re
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fakeredis import FakeStrictRedis, TcpFakeServer

__all__ = [
    "SAVE_EVERY",
    "DataFileError",
    "Embedded",
    "admin_file",
    "admin_url",
    "start_embedded",
]

log = logging.getLogger("chat.embedded")

#: Seconds between two snapshots at most (when something changed): what a crash may lose.
SAVE_EVERY = 1.0
#: The snapshot's format; a file of another format is refused, not misread.
FORMAT = 1
#: Keys whose changes alone are not worth a snapshot: this process's heartbeats, online
#: marks and per-address connection counts (they mean nothing after a restart).
VOLATILE = re.compile(rb"^chat:\{g\}:(gw:|gateways$|addr:)")
#: The one user the store serves (the gateway); its password is made at each start.
USER = "gateway"


class DataFileError(Exception):
    """The data file cannot be used; the text says which file, why, and what to do.
    `busy`: another process holds it (rather than it being unreadable)."""

    def __init__(self, text: str, busy: bool = False) -> None:
        super().__init__(text)
        self.busy = busy


class Embedded:
    """The fakeredis server, its data file (or None: nothing kept) and the saver thread."""

    def __init__(self, data: Path | None) -> None:
        self.data = data
        self.server = TcpFakeServer(("127.0.0.1", 0), server_version=(7, 0))
        self.server.daemon_threads = True
        self._lock_file: Any = None
        self._dirty = False
        self._stop = threading.Event()
        self._saver: threading.Thread | None = None
        self.loaded = 0  # keys read from the data file at start
        self.saves = 0  # snapshots written
        self._password = secrets.token_hex(32)
        self._admin_written = False  # only the gateway that wrote the key file removes it

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"redis://{USER}:{self._password}@{host!s}:{port}/0"

    def _admit_only_this_process(self) -> None:
        """Switch the `default` user off, behind a user only this process's URL names,
        before the first connection is served (the port listens since __init__)."""
        inside = FakeStrictRedis(server=self.server.fake_server, protocol=2)
        inside.acl_setuser(
            USER,
            enabled=True,
            passwords=[f"+{self._password}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        inside.acl_setuser("default", enabled=False)

    def start(self) -> None:
        """Lock and load the data file, then serve; DataFileError if the file cannot be
        used (nothing is served then)."""
        if self.data is not None:
            try:
                self._lock()
                self._load()
            except BaseException:
                self._unlock()
                self.server.server_close()
                raise
            db = self.server.fake_server.dbs[0]
            notify = db.notify_watch

            def changed(key: bytes) -> None:
                if not VOLATILE.match(key):
                    self._dirty = True
                notify(key)

            db.notify_watch = changed  # type: ignore[method-assign]  # every write passes here
            self._saver = threading.Thread(
                target=self._save_loop, name="embedded-save", daemon=True
            )
            self._saver.start()
        self._admit_only_this_process()
        thread = threading.Thread(
            target=self.server.serve_forever, name="embedded-redis", daemon=True
        )
        thread.start()
        if self.data is not None:
            self._write_admin_file()

    def _write_admin_file(self) -> None:
        """The store's URL for the operator's tool, readable by this account only."""
        assert self.data is not None
        path = admin_file(self.data)
        try:
            self._replace(path, (self.url + "\n").encode(), durable=False)
            self._admin_written = True
        except OSError as exc:
            log.warning("event=admin_file_failed file=%s error=%s", path, exc)

    def _replace(self, path: Path, raw: bytes, durable: bool) -> None:
        """`path` holds `raw`, or (on any failure) what it held: written to a temporary
        file beside it (mkstemp: 0600) and renamed over it; `durable`: on disk first."""
        assert self.data is not None
        fd, tmp = tempfile.mkstemp(prefix=self._tmp_prefix(), suffix=".tmp", dir=self.data.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def shutdown(self) -> None:
        """Stop serving, write the last changes, let go of the file."""
        if self.data is not None and self._admin_written:
            with contextlib.suppress(OSError):
                admin_file(self.data).unlink()
        self._stop.set()
        if self._saver is not None:
            self._saver.join()
        self.server.shutdown()
        self.server.server_close()
        if self.data is not None and self._dirty:
            self._save()
        self._unlock()

    # -- the file ------------------------------------------------------------------------

    def _lock(self) -> None:
        assert self.data is not None
        what = f"the data file {self.data}"
        try:
            self.data.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.data.with_name(self._lock_name()), os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_file = os.fdopen(fd, "r+", encoding="utf-8")
        except OSError as exc:
            raise DataFileError(f"cannot use {what}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.seek(0)
            owner = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            self._lock_file = None
            raise DataFileError(f"{what} is in use by {owner}", busy=True) from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"gateway pid {os.getpid()}\n")
        self._lock_file.flush()
        for stale in self.data.parent.iterdir():
            name = stale.name
            if name.startswith(self._tmp_prefix()) and name.endswith(".tmp"):
                # a snapshot a crash left half written
                with contextlib.suppress(OSError):
                    stale.unlink()

    def _lock_name(self) -> str:
        assert self.data is not None
        return self.data.name + ".lock"

    def _tmp_prefix(self) -> str:
        assert self.data is not None
        return f".{self.data.name}."

    def _unlock(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.truncate(0)
                self._lock_file.close()
            self._lock_file = None

    def _load(self) -> None:
        assert self.data is not None
        try:
            raw = self.data.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DataFileError(f"cannot read the data file {self.data}: {exc.strerror}") from None
        try:
            snapshot = pickle.loads(raw)
            if not isinstance(snapshot, dict) or snapshot.get("format") != FORMAT:
                raise ValueError
            stored: dict[bytes, tuple[Any, float | None]] = snapshot["keys"]
        except Exception:  # what unpickling garbage raises says nothing to an operator
            raise DataFileError(
                f"cannot read the data file {self.data}: not a chat gateway data file of "
                "this version (damaged, or another program's); move it away to start empty"
            ) from None
        from fakeredis._core._database import Item  # the database's own record

        db = self.server.fake_server.dbs[0]
        now = time.time()
        with self.server.fake_server.lock:
            for key, (value, expireat) in stored.items():
                if expireat is not None and expireat <= now:
                    continue
                item = Item(value)
                item.expireat = expireat  # type: ignore[assignment]  # fakeredis: float | None
                db[key] = item
                self.loaded += 1
        log.info("event=data_loaded file=%s keys=%d", self.data, self.loaded)

    def _save_loop(self) -> None:
        while not self._stop.wait(SAVE_EVERY):
            if self._dirty:
                try:
                    self._save()
                except OSError as exc:  # said, and tried again at the next change
                    log.warning("event=data_save_failed file=%s error=%s", self.data, exc)

    def _save(self) -> None:
        """One snapshot, under the server's lock (it pauses the store, and with the GIL
        the gateway, meanwhile: 0.1-0.2 s for 50,000 stored messages), written
        atomically."""
        assert self.data is not None
        fake = self.server.fake_server
        with fake.lock:
            self._dirty = False
            db = fake.dbs[0]
            now = time.time()
            keys = {
                k: (item.value, item.expireat)
                for k, item in db._dict.items()
                if item.expireat is None or item.expireat > now
            }
            raw = pickle.dumps(
                {"format": FORMAT, "saved_at": now, "keys": keys}, pickle.HIGHEST_PROTOCOL
            )
        try:
            self._replace(self.data, raw, durable=True)
        except BaseException:
            self._dirty = True
            raise
        dir_fd = os.open(self.data.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.saves += 1


def admin_file(data: Path) -> Path:
    """Where a running embedded gateway keeps its store's URL for the operator's tool."""
    return data.with_name(data.name + ".admin")


def admin_url(data: Path) -> str | None:
    """The store URL of the embedded gateway running on `data` (None: none runs there).
    A key file left by a gateway that was killed names a port nobody serves: the tool then
    says it cannot reach it."""
    try:
        return admin_file(data).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def start_embedded(data: Path | None = None) -> tuple[str, Embedded]:
    """Start an embedded store (keeping its data in `data`, or nothing with None): its
    URL and the handle to shut it down."""
    embedded = Embedded(data)
    embedded.start()
    return embedded.url, embedded
