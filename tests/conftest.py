"""Shared fixtures: the command line (in this process, or in a subprocess where a real
process is the point: signals, exit on interrupt, start-up, workers), and a real PostgreSQL
server."""

import contextlib
import glob
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd, timeout=600, check=False, env=None):
    """Run ``biotune-optuna ARGS`` the way a user does; return the completed process."""
    result = subprocess.run([sys.executable, "-m", "biotune_optuna.cli", *map(str, args)],
                            cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def call_main(*args, cwd, timeout=None, check=False, env=None):
    """``biotune-optuna ARGS`` through ``main(argv)`` in this process (no interpreter and
    torch start-up per call), with the process state it changes restored; the result has a
    subprocess's ``returncode``, ``stdout`` and ``stderr``. ``timeout`` is taken so that
    calls read as the subprocess form's do; in-process it sets no limit."""
    import optuna

    from biotune_optuna.cli import main

    root = logging.getLogger()
    saved = (os.getcwd(), dict(os.environ), signal.getsignal(signal.SIGTERM),
             list(root.handlers), root.level, optuna.logging.get_verbosity(),
             _torch_threads())
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(cwd)
        os.environ.update(env or {})
        root.handlers = []  # as in a fresh process: main's basicConfig writes to ``err``
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(map(str, args)))
            except SystemExit as stop:  # argparse: --help, usage errors
                code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
    finally:
        cwd_before, env_before, term, handlers, level, verbosity, threads = saved
        os.chdir(cwd_before)
        os.environ.clear()
        os.environ.update(env_before)
        signal.signal(signal.SIGTERM, term)
        root.handlers, root.level = handlers, level
        optuna.logging.set_verbosity(verbosity)
        if threads is not None:
            sys.modules["torch"].set_num_threads(threads)
    result = subprocess.CompletedProcess(["biotune-optuna", *map(str, args)], code,
                                         out.getvalue(), err.getvalue())
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def _torch_threads():
    """torch's thread count when torch is loaded (a command may change it), else None."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


@pytest.fixture
def cli(tmp_path):
    """The command in this process, in ``tmp_path`` unless told ``cwd``."""
    def call(*args, **kwargs):
        kwargs.setdefault("cwd", tmp_path)
        return call_main(*args, **kwargs)
    return call


@pytest.fixture
def cli_process(tmp_path):
    """The command in a subprocess, the way a user starts it."""
    def call(*args, **kwargs):
        kwargs.setdefault("cwd", tmp_path)
        return run_cli(*args, **kwargs)
    return call


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() == 0:  # initdb refuses to run as root
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@dataclass
class Postgres:
    """A running server: its URL, and a restart as an administrator or a crash gives one
    (every connection dropped, the data kept)."""

    url: str
    pg_ctl: list[str]

    def restart(self) -> None:
        subprocess.run(_as_postgres([*self.pg_ctl, "-m", "immediate", "restart"]),
                       check=True, capture_output=True)


@pytest.fixture(scope="session")
def postgres_url(postgres):
    return postgres.url


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server from Debian's packages on 127.0.0.1, for the session."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; make test "
                    "installs it)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install .[test])")
    bin_dir = Path(binaries[-1]).parent
    # Not under pytest's basetemp: its 0700 parents would lock the postgres user out.
    root = Path(tempfile.mkdtemp(prefix="biotune-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                                 "-U", "postgres"]), check=True, capture_output=True)
    port = _free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                                 "-l", str(root / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p",
                                     str(port), "-U", "postgres", "biotune"]),
                       check=True, capture_output=True)
        yield Postgres(f"postgresql://postgres@127.0.0.1:{port}/biotune",
                       [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                        str(root / "log"), "-w"])
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
