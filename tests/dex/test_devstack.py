"""The launcher behind ``make run`` and ``make test``, driven as a user would.

- With DATABASE_URL / REDIS_URL unset it starts an embedded PostgreSQL and Redis
  under the data directory, and stops them when it exits.
- With them set it uses those servers and starts nothing.
- ``run`` migrates, seeds and serves the admin and /healthz; running it again is safe.
"""

import http.cookiejar
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]
PROBE = """
import os, psycopg, redis, environ
db = environ.Env.db_url_config(os.environ["DATABASE_URL"])
conninfo = dict(dbname=db["NAME"], user=db["USER"], host=db.get("HOST") or db["OPTIONS"]["host"])
if db.get("PORT"):
    conninfo["port"] = db["PORT"]
with psycopg.connect(**conninfo) as conn:
    print("pg", conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
print("redis", redis.Redis.from_url(os.environ["REDIS_URL"]).info("server")["run_id"])
"""


@pytest.fixture
def data_root():
    """A scratch directory the embedded PostgreSQL can use. Not pytest's ``tmp_path``:
    as root, pgserver runs PostgreSQL as its own system user, which must be able to
    traverse every parent, and pytest keeps its temporary root private (0700)."""
    root = Path(tempfile.mkdtemp(prefix="dex-devstack-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def launcher_env(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
    }
    return env | overrides


def launcher(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "dex.devstack", "--data-dir", str(data_dir), *args]


def probe(data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    result = subprocess.run(
        launcher(data_dir, "exec", "--", sys.executable, "-c", PROBE),
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def current_servers() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT system_identifier FROM pg_control_system()")
        pg_id = str(cursor.fetchone()[0])
    return {"pg": pg_id, "redis": redis.Redis.from_url(settings.REDIS_URL).info()["run_id"]}


@pytest.mark.django_db
def test_external_services_are_used_when_urls_are_set(data_root):
    env = launcher_env(DATABASE_URL=os.environ["DATABASE_URL"], REDIS_URL=os.environ["REDIS_URL"])
    seen = probe(data_root / "data", env)
    assert seen == current_servers()
    assert not (data_root / "data" / "pg").exists()
    assert not (data_root / "data" / "redis").exists()


@pytest.mark.django_db
def test_embedded_services_start_when_urls_are_unset_and_stop_on_exit(data_root):
    data_dir = data_root / "data"
    first = probe(data_dir, launcher_env())
    assert first != current_servers()  # its own servers, not the suite's
    assert (data_dir / "pg" / "PG_VERSION").exists()
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL left running"
    # Same data directory next time: the same cluster, started again.
    assert probe(data_dir, launcher_env())["pg"] == first["pg"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_run(data_dir: Path, port: int) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen(
        launcher(data_dir, "run"),
        env=launcher_env(WEB_PORT=str(port)),
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 90
    for line in process.stdout:
        lines.append(line)
        if "DEX is up" in line or time.monotonic() > deadline:
            break
    lines.append(process.stdout.readline())  # the login hint follows
    return process, lines


def admin_login(base: str, username: str, password: str) -> str:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/admin/login/", timeout=10).read()
    csrf = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    form = urllib.parse.urlencode(
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": csrf,
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(
        f"{base}/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"}
    )
    with opener.open(request, timeout=10) as response:
        return response.read().decode()


@pytest.mark.django_db
def test_run_serves_admin_and_healthz_and_is_safe_to_run_twice(data_root):
    data_dir = data_root / "data"
    logins = []
    for attempt in (1, 2):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process, lines = start_run(data_dir, port)
        output = "".join(lines)
        try:
            assert "DEX is up" in output, output
            login = re.search(r"staff login: (\S+) / (\S+)", output)
            assert login, output
            logins.append(login.groups())
            assert ("Demo data ready (0 new rows)" in output) is (attempt == 2), output
            assert "ETH-USDC, BTC-USDC" in output

            with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
                assert response.status == 200
            page = admin_login(base, *login.groups())
            assert "Back office" in page  # the admin index, reached only when logged in
            assert "Log out" in page
        finally:
            # As an operator would stop it: the launcher passes SIGTERM on to the
            # Procfile's processes, waits for them, then stops its embedded servers.
            process.send_signal(signal.SIGTERM)
            try:
                assert process.wait(timeout=60) is not None
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
        assert not (data_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL left running"
    assert logins[0] == logins[1]
