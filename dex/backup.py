"""Back up the platform's PostgreSQL database and restore it.

    python -m dex.backup backup [--dir backups]
    python -m dex.backup restore FILE [--database NAME]
    python -m dex.backup restore FILE --into-configured [--yes]

``make backup`` / ``make restore FILE=…`` run these through ``dex.devstack exec``, so
the database is ``DATABASE_URL`` when it is set and the embedded PostgreSQL otherwise.

- **backup** writes ``pg_dump --format=custom`` to ``<dir>/<UTC timestamp>.dump``
  (written aside and renamed, so a failed dump leaves no file that looks like a backup).
- **restore** loads a dump with ``pg_restore`` in one transaction, stopping at the first
  error. By default into a *new* database on the same server (``--database``, or
  ``<name>_restore_<timestamp>``), which it creates — and drops again if the restore
  fails — leaving the configured one untouched: point ``DATABASE_URL`` at it once
  ``manage.py ledger_check`` passes there. ``--into-configured`` replaces the configured
  database's objects instead (``pg_restore --clean``), after the operator types its name
  (or passes ``--yes``).

``pg_dump`` and ``pg_restore`` must be at least as new as the server (and are best
exactly its major version): ``pg_binary`` picks them from the embedded server's own
binaries (the ``pgserver`` wheel), ``/usr/lib/postgresql/<major>/bin`` and ``PATH``.
Roles are the server's, not the database's: the API's role (``API_DB_ROLE``, which the
row-level security grants name) is created on the target server if it is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_DIR = Path("backups")
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")


# Where a client tool's argument list takes the database (``_run`` fills it in).
DBNAME = "--dbname"


class BackupError(Exception):
    """A backup or restore that could not be done; the message says why."""


# --- where things are ---------------------------------------------------------------------


def libpq_url(url: str) -> str:
    """``url`` as libpq reads it (``postgres://`` and ``postgresql://`` both; Django's
    extra query options are not libpq's and are dropped)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise BackupError(f"DATABASE_URL must be a PostgreSQL URL, not {parts.scheme!r}")
    libpq_keys = {"host", "port", "sslmode", "sslrootcert", "sslcert", "sslkey", "options"}
    query = {k: v[-1] for k, v in parse_qs(parts.query).items() if k in libpq_keys}
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise BackupError("DATABASE_URL names no database")
    return name


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def server_major(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def _candidates(name: str) -> list[Path]:
    found: list[Path] = []
    spec = importlib.util.find_spec("pgserver")  # the embedded server's binaries
    if spec is not None and spec.origin:
        found.append(Path(spec.origin).parent / "pginstall" / "bin" / name)
    found += [Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))]
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    return [p for p in found if p.is_file() and os.access(p, os.X_OK)]


def binary_major(path: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


def pg_binary(name: str, major: int) -> Path:
    """``name`` (``pg_dump``, ``pg_restore``) of the server's major version, else the
    oldest newer one; never an older one (it refuses newer servers)."""
    versions = [(v, p) for p in _candidates(name) if (v := binary_major(p)) is not None]
    same = [p for v, p in versions if v == major]
    if same:
        return same[0]
    newer = sorted((v, str(p)) for v, p in versions if v > major)
    if newer:
        return Path(newer[0][1])
    seen = ", ".join(f"{p} ({v})" for v, p in versions) or "none"
    raise BackupError(
        f"no {name} for PostgreSQL {major} or newer (found: {seen}); install the "
        f"PostgreSQL {major} client tools"
    )


def without_password(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its password, and the environment that carries it instead: a
    client tool's command line is readable by every local user (``ps``), its
    environment only by its owner."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, {}
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc)), {"PGPASSWORD": unquote(parts.password)}


def _run(argv: Sequence[str], *, url: str) -> None:
    """Run a client tool on the database at ``url``, given as its last ``--dbname``."""
    url, secret = without_password(url)
    argv = [f"--dbname={url}" if arg == DBNAME else arg for arg in argv]
    result = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **secret})
    if result.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed: {result.stderr.strip()}")


# --- backup -------------------------------------------------------------------------------


def backup(*, url: str, directory: Path = DEFAULT_DIR, now: dt.datetime | None = None) -> Path:
    """Dump the database at ``url`` into ``directory``; return the file."""
    url = libpq_url(url)
    now = now or dt.datetime.now(dt.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{now:%Y%m%dT%H%M%SZ}.dump"
    if target.exists():
        raise BackupError(f"{target} exists already")
    partial = target.with_suffix(".dump.partial")
    pg_dump = pg_binary("pg_dump", server_major(url))
    try:
        _run([str(pg_dump), "--format=custom", f"--file={partial}", DBNAME], url=url)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


# --- restore ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Restored:
    database: str
    url: str


def _ensure_api_role(url: str) -> None:
    role = os.environ.get("API_DB_ROLE", "dex_api")
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))


def _maintenance_url(url: str) -> str:
    return with_database(url, "postgres")


def _database_exists(url: str, name: str) -> bool:
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone())


def _pg_restore(url: str, file: Path, *, clean: bool) -> None:
    pg_restore = pg_binary("pg_restore", server_major(url))
    argv = [
        str(pg_restore),
        "--no-owner",  # the objects belong to whoever restores them
        "--single-transaction",
        "--exit-on-error",
        DBNAME,
    ]
    if clean:
        argv += ["--clean", "--if-exists"]
    _run([*argv, str(file)], url=url)


def _check_dump(file: Path) -> None:
    if not file.is_file():
        raise BackupError(f"no backup file {file}")
    with file.open("rb") as f:
        if f.read(5) != b"PGDMP":
            raise BackupError(f"{file} is not a pg_dump custom-format archive")


def restore_new(
    *, url: str, file: Path, database: str | None = None, now: dt.datetime | None = None
) -> Restored:
    """Restore ``file`` into a new database on ``url``'s server (created here; dropped
    again if the restore fails). The configured database is not touched."""
    url = libpq_url(url)
    _check_dump(file)
    now = now or dt.datetime.now(dt.UTC)
    name = database or f"{database_name(url)}_restore_{now:%Y%m%d%H%M%S}"
    if _database_exists(url, name):
        raise BackupError(f"database {name!r} exists already; name a new one with --database")
    _ensure_api_role(url)
    with psycopg.connect(_maintenance_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = with_database(url, name)
    try:
        _pg_restore(target, file, clean=False)
    except BaseException:
        database_drop(url=url, name=name)
        raise
    return Restored(name, target)


def restore_configured(*, url: str, file: Path) -> Restored:
    """Restore ``file`` over the database at ``url`` itself (in one transaction: a
    failure leaves it as it was). Stop the platform's processes first."""
    url = libpq_url(url)
    _check_dump(file)
    _ensure_api_role(url)
    _pg_restore(url, file, clean=True)
    return Restored(database_name(url), url)


def database_drop(*, url: str, name: str) -> None:
    with psycopg.connect(_maintenance_url(libpq_url(url)), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


# --- command line -------------------------------------------------------------------------


def _confirmed(name: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        return False
    answer = input(f"This replaces everything in database {name!r}. Type its name to go on: ")
    return answer.strip() == name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dex.backup", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("backup", help="dump the database to <dir>/<timestamp>.dump")
    make.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    load = commands.add_parser("restore", help="restore a dump into a new database")
    load.add_argument("file", type=Path)
    load.add_argument("--database", help="the new database's name")
    load.add_argument(
        "--into-configured",
        action="store_true",
        help="replace the configured database's contents instead (asks first)",
    )
    load.add_argument("--yes", action="store_true", help="do not ask")
    args = parser.parse_args(argv)

    url = os.environ.get("DATABASE_URL")
    if not url:
        print(
            "DATABASE_URL is not set (run through `make backup` / `make restore`)", file=sys.stderr
        )
        return 2
    try:
        if args.command == "backup":
            print(backup(url=url, directory=args.dir))
            return 0
        if args.into_configured:
            name = database_name(url)
            if not _confirmed(name, args.yes):
                print(f"not confirmed: {name!r} is unchanged", file=sys.stderr)
                return 2
            restored = restore_configured(url=url, file=args.file)
        else:
            restored = restore_new(url=url, file=args.file, database=args.database)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"restored {args.file} into database {restored.database!r}")
    if not args.into_configured:
        print(f"check it: DATABASE_URL={restored.url} python manage.py ledger_check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
