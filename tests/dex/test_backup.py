"""Backups: a dump of a database with trades and postings restores into a fresh database
that holds the same rows and passes ``ledger_check``; bad input is refused and changes
nothing; the client tools match the server."""

import datetime as dt
import os
import subprocess
import sys
import uuid
from decimal import Decimal

import psycopg
import pytest

from dex import backup
from exchange.models import Trade
from portfolio.models import Posting
from tests.factories import place_order
from tests.live import REPO, database_url
from tests.portfolio import sim

D = Decimal
COUNTED = ("exchange_trade", "exchange_order", "portfolio_posting", "portfolio_ledgeraccount")


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(backup.libpq_url(url)) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}


@pytest.fixture
def fresh_name():
    """A database name for the restore, dropped at the end."""
    name = f"test_restore_{uuid.uuid4().hex[:10]}"
    yield name
    backup.database_drop(url=database_url(), name=name)


def run_cli(*args: str, database: str | None = None, stdin=subprocess.DEVNULL):
    env = {**os.environ, "DATABASE_URL": database or database_url()}
    return subprocess.run(
        [sys.executable, "-m", "dex.backup", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        stdin=stdin,
        timeout=300,
    )


@pytest.mark.django_db(transaction=True)
def test_a_backup_restores_into_a_fresh_database_that_passes_the_ledger_check(
    market, buyer, seller, tmp_path, fresh_name
):
    maker = place_order(seller, market, "SELL", "2", "100")
    taker = place_order(buyer, market, "BUY", "1.5", "100")
    sim.fill_and_settle(maker, taker, D("1.5"))
    place_order(buyer, market, "BUY", "1", "99")  # open, holding funds
    assert Trade.objects.count() == 1
    assert Posting.objects.exists()
    source = database_url()

    made = run_cli("backup", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    dump = tmp_path / made.stdout.strip().rsplit("/", 1)[-1]
    assert dump.is_file()
    assert dump.name.endswith(".dump")
    assert dump.read_bytes()[:5] == b"PGDMP"
    assert not list(tmp_path.glob("*.partial"))

    loaded = run_cli("restore", str(dump), "--database", fresh_name)
    assert loaded.returncode == 0, loaded.stderr
    assert f"into database '{fresh_name}'" in loaded.stdout
    restored = backup.with_database(source, fresh_name)
    assert counts(restored) == counts(source)
    assert counts(restored)["exchange_trade"] == 1

    checked = subprocess.run(
        [sys.executable, "manage.py", "ledger_check"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": restored, "DJANGO_SETTINGS_MODULE": "dex.settings.test"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ledger check passed" in checked.stdout

    # The restored database keeps the schema's rules: postings are still append-only.
    with (
        psycopg.connect(backup.libpq_url(restored)) as conn,
        pytest.raises(psycopg.errors.RaiseException),
    ):
        conn.execute("DELETE FROM portfolio_posting")


@pytest.mark.django_db(transaction=True)
def test_restore_refuses_an_existing_database_and_a_file_that_is_no_dump(
    market, buyer, tmp_path, fresh_name
):
    place_order(buyer, market, "BUY", "1", "99")
    source = database_url()
    before = counts(source)
    dump = backup.backup(url=source, directory=tmp_path)

    taken = run_cli("restore", str(dump), "--database", backup.database_name(source))
    assert taken.returncode == 1
    assert "exists already" in taken.stderr

    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a dump at all")
    refused = run_cli("restore", str(junk), "--database", fresh_name)
    assert refused.returncode == 1
    assert "is not a pg_dump custom-format archive" in refused.stderr
    missing = run_cli("restore", str(tmp_path / "nope.dump"), "--database", fresh_name)
    assert missing.returncode == 1
    assert "no backup file" in missing.stderr

    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
    broken = run_cli("restore", str(truncated), "--database", fresh_name)
    assert broken.returncode == 1
    assert "pg_restore failed" in broken.stderr
    with psycopg.connect(backup.libpq_url(backup.with_database(source, "postgres"))) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [fresh_name])
        assert left.fetchone() is None  # the half-restored database was dropped
    assert counts(source) == before


@pytest.mark.django_db(transaction=True)
def test_restoring_over_the_configured_database_needs_confirmation(market, buyer, tmp_path):
    source = database_url()
    dump = backup.backup(url=source, directory=tmp_path)
    place_order(buyer, market, "BUY", "1", "99")  # after the backup
    before = counts(source)

    refused = run_cli("restore", str(dump), "--into-configured")
    assert refused.returncode == 2
    assert "not confirmed" in refused.stderr
    assert counts(source) == before

    answered = run_cli("restore", str(dump), "--into-configured", "--yes")
    assert answered.returncode == 0, answered.stderr
    assert counts(source)["exchange_order"] == before["exchange_order"] - 1


def test_a_second_backup_in_the_same_second_does_not_overwrite_the_first(tmp_path, db):
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    first = backup.backup(url=database_url(), directory=tmp_path, now=at)
    assert first.name == "20260102T030405Z.dump"
    with pytest.raises(backup.BackupError, match="exists already"):
        backup.backup(url=database_url(), directory=tmp_path, now=at)


def test_the_client_tools_are_never_older_than_the_server(db):
    major = backup.server_major(backup.libpq_url(database_url()))
    for name in ("pg_dump", "pg_restore"):
        assert backup.binary_major(backup.pg_binary(name, major)) >= major
        # Each installed version is chosen for a server of its own version.
        for candidate in backup._candidates(name):
            version = backup.binary_major(candidate)
            assert backup.binary_major(backup.pg_binary(name, version)) == version
    with pytest.raises(backup.BackupError, match="no pg_dump for PostgreSQL 99 or newer"):
        backup.pg_binary("pg_dump", 99)


def test_a_url_that_is_not_postgresql_is_refused():
    with pytest.raises(backup.BackupError, match="must be a PostgreSQL URL"):
        backup.libpq_url("mysql://root@localhost/dex")
    assert backup.libpq_url("postgres://u@h:5432/dex?conn_max_age=60&sslmode=require") == (
        "postgresql://u@h:5432/dex?sslmode=require"
    )
    assert backup.libpq_url("postgresql://postgres@/dex?host=/tmp/pg") == (
        "postgresql://postgres@/dex?host=%2Ftmp%2Fpg"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://dex:s%40cret@db.example:5433/dex?sslmode=require",
            "postgresql://dex@db.example:5433/dex?sslmode=require",
        ),
        ("postgresql://dex:pw@[::1]/dex", "postgresql://dex@[::1]/dex"),
    ],
)
def test_the_password_goes_to_the_tools_environment_not_their_command_line(monkeypatch, url, shown):
    """Every local user can read a process's command line (ps); its environment, only
    its owner."""
    seen = {}

    def run(argv, **kwargs):
        seen.update(argv=argv, env=kwargs["env"])
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(backup.subprocess, "run", run)
    backup._run(["pg_dump", backup.DBNAME, "--file=x"], url=url)
    assert seen["argv"] == ["pg_dump", f"--dbname={shown}", "--file=x"]
    assert seen["env"]["PGPASSWORD"] == ("s@cret" if "s%40cret" in url else "pw")
    assert not any("cret" in arg or ":pw@" in arg for arg in seen["argv"])
