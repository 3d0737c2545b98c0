"""Running the platform's processes against the test database, for tests that need a
real matcher or web server: ``run_matcher`` processes (``Matchers``), a uvicorn web
process (``web_server``), and waiting on them (``wait_for``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parents[1]
POLL = "0.05"


def database_url() -> str:
    """The URL of the database this test runs on (the test database, not the one
    DATABASE_URL names), TCP or unix socket, for the processes the test starts."""
    db = connection.settings_dict
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or db.get("OPTIONS", {}).get("host") or ""
    port = str(db.get("PORT") or "")
    if host and not host.startswith("/"):
        return f"postgres://{user}{password}@{host}{':' + port if port else ''}/{db['NAME']}"
    query = f"?host={quote(host)}" if host else ""
    if port:
        query += f"{'&' if query else '?'}port={port}"
    return f"postgresql://{user}{password}@/{db['NAME']}{query}"


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a platform process on the test database and Redis."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dex.settings.test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGTERM) -> None:
    """Stop ``proc``'s process group: ``sig``, then SIGKILL if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    proc.wait(10)


class Matchers:
    """Starts ``run_matcher`` processes for one market and kills whatever is left."""

    def __init__(self, symbol: str, logs: Path) -> None:
        self.symbol = symbol
        self.logs = logs
        self.procs: list[subprocess.Popen] = []
        self.command = [sys.executable, "manage.py", "run_matcher"]
        self.env = process_env()

    def start(self) -> subprocess.Popen:
        log = open(self.logs / f"matcher-{len(self.procs)}.log", "wb")  # noqa: SIM115
        with log:
            proc = subprocess.Popen(
                [*self.command, "--market", self.symbol, "--poll-interval", POLL],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        stop(proc, sig=signal.SIGKILL)

    def kill_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                self.kill(proc)

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log"))
        )


def wait_for(condition, timeout: float, what: str, matchers: Matchers | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}"
        + (f"\n{matchers.log_tail()}" if matchers else "")
    )


@contextlib.contextmanager
def web_server(logs: Path, **extra_env: str) -> Iterator[int]:
    """``uvicorn dex.asgi:application`` on a free port against the test database, for
    the block; yields the port."""
    port = free_port()
    log_path = logs / "uvicorn.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "dex.asgi:application"),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--no-access-log", "--log-level", "warning"),
            ],
            cwd=REPO,
            env=process_env(**extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(lambda: listening() or proc.poll() is not None, 30, "uvicorn to listen")
        assert proc.poll() is None, log_path.read_text()
        yield port
    finally:
        stop(proc)
