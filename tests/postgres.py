"""A throwaway PostgreSQL server for tests: `initdb` into a temporary folder, `pg_ctl start` on 127.0.0.1
with a free port and trust authentication, one fresh database per test, `pg_ctl stop` and the folder
removed at the end.

The binaries are Debian's (``/usr/lib/postgresql/VERSION/bin``, the ``postgresql`` package that ``.ci/run``
installs) or the first ``initdb`` on ``PATH``. PostgreSQL refuses to run as root, so as root the cluster
runs as the ``postgres`` user (which the Debian package creates) through ``runuser`` (or ``su``) in a
folder that user owns. Without the binaries, such a user or the psycopg2 driver, a test is skipped with
the reason; with ``RECSYS_REQUIRE_POSTGRES=1`` in the environment (``.ci/run`` sets it) it fails instead,
so that CI never passes by skipping the PostgreSQL tests.

Use it from a test module::

    @pytest.fixture(scope="module")
    def postgres():
        yield from postgres_server()

    def test_something(postgres):
        url = postgres.new_database("mine")   # postgresql+psycopg2://recsys@127.0.0.1:PORT/mine
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "find_bin_dir", "postgres_server"]

SUPERUSER = "recsys"  # the cluster's bootstrap superuser (initdb -U); trust authentication, no password
_START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb`` and ``pg_ctl``, else ``initdb``'s folder on
    ``PATH``, else None."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", Path(path).parent.name)) or (0,)

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl", path=str(Path(initdb).parent)):
        return Path(initdb).parent
    return None


@dataclass
class PostgresServer:
    """A running cluster: its binaries, folder, port and superuser."""

    bin_dir: Path
    folder: Path  # holds data/, the socket and the log; owned by ``run_as`` where that is set
    port: int
    run_as: str | None  # the OS user the server runs as, when this process is root
    host: str = "127.0.0.1"
    user: str = SUPERUSER

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` (what Optuna's ``--storage`` takes)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create database ``name`` (dropping one of that name first) and return its URL."""
        for command in (["dropdb", "--if-exists"], ["createdb"]):
            self._client(*command, name)
        return self.url(name)

    def _client(self, program: str, *args: str) -> None:
        # Client programs connect over TCP with trust authentication: no need to switch users.
        done = subprocess.run([str(self.bin_dir / program), "-h", self.host, "-p", str(self.port), "-U", self.user,
                               *args], capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{program} {' '.join(args)}: {done.stderr.strip()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _as_user(user: str | None, command: list[str]) -> list[str]:
    """``command`` run as ``user`` (None: as this process)."""
    if user is None:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *command]
    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(command)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _unavailable(reason: str) -> None:
    if os.environ.get("RECSYS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"RECSYS_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _run(command: list[str], cwd: Path, what: str, server: PostgresServer | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=_START_TIMEOUT_S)
    if done.returncode:
        log = f"\nserver log:\n{server.log_tail()}" if server is not None else ""
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stdout.strip()}\n{done.stderr.strip()}{log}")


def postgres_server() -> Iterator[PostgresServer]:
    """A generator fixture body: start a cluster, yield it, stop it and remove its folder.

    Skips (or fails, under ``RECSYS_REQUIRE_POSTGRES=1``) when PostgreSQL or psycopg2 is missing.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH: "
                     "install Debian's `postgresql` package (apt-get install postgresql), as .ci/run does")
    try:
        import psycopg2  # noqa: F401  (Optuna's storage needs the driver)
    except ImportError:
        _unavailable("no PostgreSQL driver: pip install psycopg2-binary (in the `dev` extra)")
    run_as = None
    if os.geteuid() == 0:  # postgres refuses root
        run_as = "postgres"
        try:
            owner = pwd.getpwnam(run_as)
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run PostgreSQL as "
                         "(Debian's `postgresql` package creates it)")
    # Not pytest's tmp_path (nor $TMPDIR) as root: the postgres user cannot enter root's 0700 folders; /tmp it can.
    folder = Path(tempfile.mkdtemp(prefix="recsys-pg-", dir="/tmp" if run_as is not None else None))
    if run_as is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    server = None
    try:
        _run(_as_user(run_as, [str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", SUPERUSER, "--auth=trust",
                               "--encoding=UTF8", "--no-sync", "--no-instructions", "--wal-segsize=1"]), folder, "initdb")
        for attempt in range(3):  # the free port may be taken between the probe and the start
            server = PostgresServer(bin_dir=bin_dir, folder=folder, port=_free_port(), run_as=run_as)
            options = (f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories={folder} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100 "
                       "-c min_wal_size=2MB -c max_wal_size=16MB")
            try:
                _run(_as_user(run_as, [str(bin_dir / "pg_ctl"), "start", "-w", "-t", str(_START_TIMEOUT_S),
                                       "-D", str(server.data), "-l", str(server.log), "-o", options]),
                     folder, "pg_ctl start", server)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        yield server
    finally:
        if server is not None:
            for mode in ("immediate", "fast"):  # a throwaway cluster: no clean shutdown needed
                stop = [str(bin_dir / "pg_ctl"), "stop", "-D", str(server.data), "-m", mode, "-w", "-t", "30"]
                try:
                    if subprocess.run(_as_user(run_as, stop), cwd=folder, capture_output=True, timeout=60).returncode == 0:
                        break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(folder, ignore_errors=True)
