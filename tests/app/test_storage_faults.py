"""Storage after a fault: a journal line torn by a crash, a journal damaged by an older
writer, an SQLite write cut short by a kill, a disk that fills during a search. Each time:
one line, nothing readable lost, and the same command completes the budget."""

import os
import resource
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from biotune_optuna.sampler.records import RETRY_OF, TrialRecord

JOURNAL = ["--study-name", "j", "--dataset", "digits", "--model", "tiny", "--epochs", "2",
           "--population", "4", "--elite", "1", "--seed", "0", "--storage", "journal:///j.log",
           "-q"]


def search(trials):
    return ["search", *JOURNAL, "--trials", str(trials)]


def journal_study(tmp_path):
    return optuna.load_study(study_name="j", storage=JournalStorage(
        JournalFileBackend(str(tmp_path / "j.log"))))


def completed(study):
    return [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


def test_a_torn_journal_line_is_cut_off_before_a_resume_appends(cli, tmp_path):
    cli(*search(4), check=True)
    log = tmp_path / "j.log"
    last_line = log.read_bytes().splitlines(keepends=True)[-1]
    with open(log, "r+b") as handle:  # a crash 37 bytes before the end of a write
        handle.truncate(log.stat().st_size - 37)
    resumed = cli(*search(8), check=True)
    assert "ended in a line torn" in resumed.stderr
    assert (tmp_path / "j.log.torn").read_bytes() == last_line[:-37]
    assert cli("status", "--study-name", "j", "--storage", "journal:///j.log").returncode == 0
    assert len(completed(journal_study(tmp_path))) == 8


def test_a_journal_damaged_by_an_older_writer_is_refused_by_readers_and_mended(cli, tmp_path):
    cli(*search(4), check=True)
    log = tmp_path / "j.log"
    with open(log, "r+b") as handle:
        handle.truncate(log.stat().st_size - 20)
    # Optuna's own backend appends after the torn line: the entry is glued onto it
    journal_study(tmp_path).set_user_attr("written after the tear", 1)
    status = cli("status", "--study-name", "j", "--storage", "journal:///j.log")
    lines = status.stderr.strip().splitlines()
    assert status.returncode == 2 and len(lines) == 1, status.stderr
    assert "is damaged from line" in lines[0] and "run the search command again" in lines[0]
    assert not (tmp_path / "j.log.torn").exists()  # a reader changes nothing
    resumed = cli(*search(8), check=True)
    assert "mended it" in resumed.stderr
    study = journal_study(tmp_path)
    assert study.user_attrs["written after the tear"] == 1  # what the older writer meant
    assert len(completed(study)) == 8


def _file_size_limit(limit):
    def apply():  # EFBIG instead of the signal, as a full disk gives ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow  # starts processes
def test_a_disk_that_fills_mid_search_stops_it_in_one_line_and_the_rerun_loses_nothing(
        cli, tmp_path):
    cli(*search(4), check=True)
    room = (tmp_path / "j.log").stat().st_size + 3000  # a trial or so more
    full = subprocess.run([sys.executable, "-m", "biotune_optuna.cli", *search(10)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          preexec_fn=_file_size_limit(room))
    errors = [line for line in full.stderr.splitlines() if "error" in line]
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert len(errors) == 1 and "could not write" in errors[0], full.stderr
    assert "run the same command again" in errors[0]
    cli(*search(10), check=True)
    study = journal_study(tmp_path)
    trials = study.get_trials(deepcopy=False)
    assert len(completed(study)) == 10, [t.state for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retried = {t.system_attrs.get(RETRY_OF) for t in trials}
    assert failed and all(t.number in retried for t in failed)  # the lost trial ran again


@pytest.mark.slow
def test_a_database_restarted_under_two_workers_stops_them_in_one_line_and_loses_nothing(
        tmp_path, postgres):
    """The server restarts (every connection dropped) while two workers search: each
    carries on or stops with one line; the same command then completes the budget, every
    slot finished once, the interrupted trials retried."""
    command = [sys.executable, "-m", "biotune_optuna.cli", "search", "--study-name", "restart",
               "--storage", postgres.url, "--dataset", "digits", "--model", "tiny",
               "--trials", "16", "--epochs", "5", "--population", "4", "--elite", "1", "-q",
               "--heartbeat", "1", "--grace", "3"]
    workers = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + 300
    while len(_finished(postgres.url)) < 5 and time.monotonic() < deadline:
        time.sleep(0.3)
    postgres.restart()
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        lines = [line for line in err.splitlines() if line.strip()]
        assert worker.returncode in (0, 1) and "Traceback" not in err, err
        assert worker.returncode == 0 or (len(lines) == 1 and "run the command again" in
                                          lines[0]), err
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, timeout=600)
    study = optuna.load_study(study_name="restart", storage=postgres.url)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    slots = [TrialRecord.of(t).slot for t in trials if t.state == TrialState.COMPLETE]
    assert len(slots) == 16 and len(set(slots)) == 16  # none lost, none run twice
    retried = {t.system_attrs.get(RETRY_OF) for t in trials}
    assert all(t.number in retried for t in trials if t.state == TrialState.FAIL)


def _finished(url):
    try:
        return completed(optuna.load_study(study_name="restart", storage=url))
    except Exception:  # the study is being created
        return []


@pytest.fixture
def read_only(tmp_path):
    """A folder, then made read-only (a read-only bind mount as root, whom file modes do
    not stop; its mode otherwise)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    sealed = []

    def seal():
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return
        for command in (["mount", "--bind", folder, folder],
                        ["mount", "-o", "remount,bind,ro", folder]):
            subprocess.run(command, check=True, capture_output=True)
        sealed.append(folder)

    yield folder, seal
    for each in sealed:
        subprocess.run(["umount", "--lazy", each], check=True)  # this process holds k.db
    folder.chmod(0o755)


def small_study(cli, folder):
    storage = ["--storage", f"sqlite:///{folder / 'k.db'}", "--study-name", "k"]
    cli("search", *storage, "--dataset", "digits", "--model", "tiny", "--epochs", "1",
        "--population", "3", "--elite", "1", "--trials", "3", "-q", check=True)
    return storage


def one_line(result, *fragments):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


@pytest.mark.slow  # starts processes
def test_commands_beside_a_read_only_storage_say_so_before_any_work(cli, tmp_path, read_only):
    folder, seal = read_only
    storage = small_study(cli, folder)
    seal()
    one_line(cli("plot", *storage, "--out", "plots"), "k.db-artifacts", "--no-dashboard")
    assert not (tmp_path / "plots").exists() or not list((tmp_path / "plots").iterdir())
    assert cli("plot", *storage, "--out", "plots", "--no-dashboard").returncode == 0
    trained = cli("train-best", *storage, "--seeds", "0", "--top-k", "1", "--no-compare")
    one_line(trained, "is not writable", "--out")
    assert "test" not in trained.stdout  # refused before retraining
    one_line(cli("search", *storage, "--trials", "5"), "not writable")
    compared = cli("compare", "--study-name", "c", "--dataset", "digits", "--model", "tiny",
                   "--samplers", "random", "--seeds", "0,1", "--trials", "2", "--out", folder)
    one_line(compared, "is not writable", "--out")
    assert not (tmp_path / "studies").exists()  # refused before its first search
    assert cli("status", *storage).returncode == 0  # reading needs no write


@pytest.mark.slow  # starts processes
def test_plots_on_a_full_disk_stop_in_one_line_leaving_no_half_file(cli, tmp_path):
    storage = small_study(cli, tmp_path)
    full = subprocess.run([sys.executable, "-m", "biotune_optuna.cli", "plot", *storage,
                           "--out", "plots", "--no-dashboard"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=_file_size_limit(20_000))
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert full.returncode == 1 and len(lines) == 1 and "could not write" in lines[0], (
        full.stderr)
    assert not [p for p in (tmp_path / "plots").iterdir() if p.stat().st_size >= 20_000 or
                p.name.endswith(".partial")]


def test_a_journal_trial_whose_beat_stops_is_stale_once_watched_for_the_grace(tmp_path):
    import time

    from biotune_optuna.app.storage import open_storage

    storage = open_storage(f"journal:///{tmp_path}/beat.log", heartbeat=1, grace=1)
    study = optuna.create_study(storage=storage)
    dead, live = study.ask(), study.ask()
    storage.record_heartbeat(dead._trial_id)  # one beat, then silence
    assert storage._get_stale_trial_ids(study._study_id) == []  # watched from now on
    for _ in range(2):
        time.sleep(0.6)
        storage.record_heartbeat(live._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == [dead._trial_id]
    optuna.storages.fail_stale_trials(study)  # failed and retried, as on a database
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "RUNNING", "WAITING"]


KILLED_WRITER = """
import os, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("pragma cache_size = 1")  # pages reach the file before the commit
connection.execute("begin immediate")
connection.execute("update trials set state = 'FAIL'")
connection.execute("create table filler (x)")
connection.executemany("insert into filler values (?)", [(b"x" * 4000,)] * 50)
os._exit(0)  # killed mid-transaction: its rollback journal stays behind
"""


def test_an_sqlite_write_cut_short_by_a_kill_is_rolled_back_and_the_search_resumes(
        cli, tmp_path):
    sqlite = [a if a != "journal:///j.log" else "sqlite:///j.db" for a in JOURNAL]
    cli("search", *sqlite, "--trials", "2", cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "j.db")], check=True)
    assert (tmp_path / "j.db-journal").stat().st_size > 0  # a hot journal
    cli("search", *sqlite, "--trials", "3", cwd=tmp_path, check=True)
    study = optuna.load_study(study_name="j", storage=f"sqlite:///{tmp_path}/j.db")
    assert len(completed(study)) == 3  # the killed write (every trial FAIL) rolled back
