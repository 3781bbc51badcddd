"""A storage URL's password is never written into a study, a note, an artifact, the console
or an error: masked everywhere, and the URL can come from $BIOTUNE_OPTUNA_STORAGE."""

import json
import socket
import subprocess
import sys
import time

import optuna
import pytest

from biotune_optuna.app.storage_urls import ENV_VAR, masked, scrubbed, secrets
from tests.conftest import REPO

SECRET = "s3cret"


@pytest.mark.parametrize("url, shown", [
    ("postgresql://alice:s3cret@db.example/biotune", "postgresql://alice:***@db.example/biotune"),
    ("postgresql+psycopg://alice:p%40ss@h:5432/db?sslmode=require&password=zz",
     "postgresql+psycopg://alice:***@h:5432/db?sslmode=require&password=***"),
    ("postgresql://bob:p@ss:w@rd@h/db", "postgresql://bob:***@h/db"),
    ("mysql+pymysql://u@h/db?auth_token=t0k", "mysql+pymysql://u@h/db?auth_token=***"),
    ("sqlite:///studies/k.db", "sqlite:///studies/k.db"),
    ("journal:///studies/k.log", "journal:///studies/k.log"),
    ("postgresql://bob@h/db", "postgresql://bob@h/db"),
])
def test_masked_hides_passwords_and_secret_parameters(url, shown):
    assert masked(url) == shown


def test_scrubbed_masks_a_secret_wherever_a_driver_repeats_it():
    url = "postgresql://alice:p%40ss@h/db"
    assert secrets(url) == ["p%40ss", "p@ss"]
    assert (scrubbed(f"failed for {url}: password p@ss rejected", url) ==
        "failed for postgresql://alice:***@h/db: password *** rejected")


def test_a_short_password_is_masked_as_a_word_not_inside_other_words():
    url = "postgresql://u:p@127.0.0.1:1/x"
    assert (scrubbed("cannot open postgresql://u:p@127.0.0.1:1/x: port 1 (p)", url) ==
        "cannot open postgresql://u:***@127.0.0.1:1/x: port 1 (***)")


def no_secret(result):
    text = result.stdout + result.stderr
    assert SECRET not in text, text
    return result


@pytest.mark.slow
def test_a_refused_connection_fails_in_one_line_without_the_password(cli):
    result = no_secret(cli("search", "--storage", f"postgresql://alice:{SECRET}@127.0.0.1:1/x",
                           "--model", "tiny", "--trials", "1", "-q"))
    assert result.returncode == 2
    assert (result.stderr.count("\n") == 1 and "postgresql://alice:***@127.0.0.1:1/x" in
        result.stderr)


@pytest.mark.slow
def test_a_study_on_postgresql_with_a_password_holds_and_shows_it_nowhere(
        cli, tmp_path, postgres_url):
    url = postgres_url.replace("postgres@", f"postgres:{SECRET}@")  # trust auth ignores it
    search = ["search", "--study-name", "secret", "--dataset", "digits", "--model", "tiny",
              "--trials", "5", "--epochs", "1", "--population", "3", "--elite", "1"]
    no_secret(cli(*search, "--storage", url, check=True))
    env = {ENV_VAR: url}  # the way the README recommends
    for command in (["status"], ["best"], ["export"], ["studies"], ["plot", "--out", "p"]):
        no_secret(cli(*command, "--study-name", "secret", env=env, check=True))
    assert no_secret(cli("status", "--study-name", "nothing", env=env)).returncode == 2
    assert no_secret(cli(*search, "--epochs", "2", env=env)).returncode == 2

    study = optuna.load_study(study_name="secret", storage=url)
    stored = json.dumps([study.user_attrs,
                         study._storage.get_study_system_attrs(study._study_id),
                         [[t.user_attrs, t.system_attrs] for t in study.trials]])
    assert SECRET not in stored
    assert f"${ENV_VAR}" in stored  # the note's reproduce command names the variable
    artifacts = [p for p in (tmp_path / "studies").rglob("*") if p.is_file()]
    assert artifacts and not any(SECRET.encode() in p.read_bytes() for p in artifacts)


@pytest.mark.slow
def test_dashboard_warns_when_reachable_from_other_machines(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    optuna.create_study(storage=f"sqlite:///{tmp_path}/d.db", study_name="d")
    server = subprocess.Popen(
        [sys.executable, "-m", "biotune_optuna.cli", "dashboard", "--storage",
         f"sqlite:///{tmp_path}/d.db", "--host", "0.0.0.0", "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        warning = server.stderr.readline()
    finally:
        time.sleep(0.5)
        server.terminate()
        server.communicate(timeout=30)
    assert "optuna-dashboard has no authentication" in warning


def test_secrets_of_several_opened_urls_do_not_cut_into_each_other(monkeypatch):
    from biotune_optuna.app import storage_urls

    monkeypatch.setattr(storage_urls, "_opened", set())
    storage_urls.remember("postgresql://u:p@127.0.0.1:1/x")
    url = "postgresql://alice:p%40ss@h/db"
    assert (scrubbed(f"failed for {url}: password p@ss rejected", url) ==
        "failed for postgresql://alice:***@h/db: password *** rejected")
