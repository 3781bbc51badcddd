"""The command line end to end: search and resume, status/best/export/train-best/studies,
kill -9 and Ctrl-C in the middle of a trial, two workers on PostgreSQL, and bad input."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest

from biotune_optuna import contents
from biotune_optuna.app.studies import config_of
from biotune_optuna.sampler.records import RETRY_OF, TrialRecord

EXAMPLE = {"study-name": "k", "dataset": "digits", "model": "tiny", "trials": 12, "epochs": 2,
           "population": 4, "elite": 1, "seed": 0}


def search(**changes):
    """The issue's example command, with some options changed."""
    options = {**EXAMPLE, **{k.replace("_", "-"): v for k, v in changes.items()}}
    return ["search", *(str(x) for k, v in options.items() for x in (f"--{k}", v))]


SEARCH = search()


def load(storage, name="k"):
    return optuna.load_study(study_name=name, storage=storage)


def slots_filled(study):
    """Each slot's latest trial: COMPLETE for every slot of a finished search."""
    latest = {}
    for t in study.trials:
        latest[TrialRecord.of(t).slot] = t
    return latest


@pytest.mark.slow
def test_the_issue_example_runs_offline_and_resumes(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    first = cli(*SEARCH, "--storage", storage, "-q", check=True)
    assert "best plan: trial" in first.stdout
    study = load(storage)
    assert Counter(t.state.name for t in study.trials) == {"COMPLETE": 12}
    # N=4, E=1 with elite re-scoring (the default): generations of N + 2E = 6 trials
    assert Counter(TrialRecord.of(t).generation for t in study.trials) == {0: 4, 1: 6, 2: 2}
    cli(*search(trials=16), "--storage", storage, "-q", check=True)
    assert len(load(storage).trials) == 16


@pytest.mark.slow
def test_a_multi_fidelity_search_spends_its_compute_budget_and_resumes_with_it(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/m.db"
    argv = ["search", "--study-name", "m", "--storage", storage, "--model", "tiny",
            "--epochs", "3", "--low-epochs", "1", "--population", "3", "--elite", "1",
            "--multi-fidelity", "--compute-budget", "30", "-q"]
    cli(*argv, check=True)
    study = load(storage, "m")
    spent = contents.compute_spent(study.trials).epochs
    assert contents.compute_spent(study.trials[:-1]).epochs < 30 <= spent
    assert {contents.fidelity(t) for t in study.trials
            if contents.EPOCHS in t.user_attrs} == {"low", "full"}
    status = cli("status", "--storage", storage, "--study-name", "m", check=True).stdout
    assert f"compute: {spent} epochs" in status and "compute budget: 30 of 30" in status
    # the same study resumed with no option but its name keeps its compute budget
    cli("search", "--study-name", "m", "--storage", storage, "-q", check=True)
    assert len(load(storage, "m").trials) == len(study.trials)
    cli("search", "--study-name", "m", "--storage", storage, "--compute-budget", "40", "-q",
        check=True)
    assert contents.compute_spent(load(storage, "m").trials).epochs >= 40


@pytest.mark.slow
def test_inspection_commands(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    cli(*SEARCH, "--storage", storage, "-q", check=True)
    status = cli("status", "--storage", storage, "--study-name", "k", check=True).stdout
    assert "12 trials (12 complete)" in status and "generation 2" in status
    assert "best so far: trial" in status and "remaining: 0 of 12" in status
    best = json.loads(cli("best", "--storage", storage, check=True).stdout)
    assert best["trial"] == load(storage).best_trial.number
    assert set(best["block_modules"]) == {"stem", "stage1", "stage2", "head"}
    snippet = cli("export", "--storage", storage, "--format", "python", check=True).stdout
    namespace = {}
    exec(snippet, namespace)
    from biotune_optuna.finetuning.networks import TinyCNN

    groups, _ = namespace["biotune_param_groups"](TinyCNN(num_classes=10))
    assert {g["name"] for g in groups} == set(best["trained_blocks"])
    for g in groups:
        assert g["lr"] == pytest.approx(best["learning_rates"][g["name"]])
    listed = cli("studies", "--storage", storage, check=True).stdout
    assert listed.startswith("k ") and "12 trials" in listed
    trained = cli("train-best", "--storage", storage, "--seeds", "0,1", "--out",
                  tmp_path / "best.pt", "-q", check=True).stdout
    assert "full fine-tuning" in trained and "linear probing" in trained
    assert (tmp_path / "best.pt").is_file()


@pytest.mark.slow
def test_options_from_a_toml_file_with_flags_on_top(cli, tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "small.toml").write_text(
        'study-name = "t"\nmodel = "tiny"\ntrials = 3\nepochs = 1\npopulation = 3\n'
        'elite = 1\n')
    cli("search", "--config", "small.toml", "--trials", "4", "-q", check=True)
    study = load(f"sqlite:///{tmp_path}/studies/t.db", "t")
    assert len(study.trials) == 4
    assert study.user_attrs["biotune_optuna:config"]["epochs"] == 1


def wait_for(predicate, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def states(db):
    """Trial states straight from the SQLite file (no Optuna in this process)."""
    try:
        with sqlite3.connect(db) as connection:
            return Counter(s for (s,) in connection.execute("select state from trials"))
    except sqlite3.OperationalError:
        return Counter()


def training(db):
    """Running trials past the sampler, inside the objective (their parameters are stored)."""
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute(
                "select count(distinct t.trial_id) from trials t join trial_params p "
                "on p.trial_id = t.trial_id where t.state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


GRACE = 3
SLOW = ["search", "--study-name", "k", "--dataset", "digits", "--model", "tiny", "--shots",
        "60", "--trials", "9", "--epochs", "40", "--patience", "40", "--population", "4",
        "--elite", "1", "--heartbeat", "1", "--grace", str(GRACE), "-q"]


def start_worker(tmp_path, storage):
    return subprocess.Popen([sys.executable, "-m", "biotune_optuna.cli", *SLOW,
                             "--storage", storage], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_mid_trial_then_the_same_command_finishes_with_nothing_lost(cli_process,
                                                                          tmp_path):
    db = tmp_path / "k.db"
    worker = start_worker(tmp_path, f"sqlite:///{db}")
    # killed while training: a kill inside the sampler's hook (before the trial's record is
    # written) is another case, a trial the sampler never saw
    wait_for(lambda: states(db)["COMPLETE"] >= 2 and training(db) == 1)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    killed = states(db)
    assert killed["RUNNING"] == 1
    time.sleep(GRACE + 1)  # past --grace: the dead trial is stale when the search resumes
    cli_process(*SLOW, "--storage", f"sqlite:///{db}", check=True, timeout=900)
    study = load(f"sqlite:///{db}")
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    dead = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(dead) == 1
    retries = [t for t in study.trials if t.system_attrs.get(RETRY_OF) == dead[0].number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    # the retry re-evaluates the dead trial's genome (the proposal covers params it had not
    # suggested yet when it was killed)
    assert retries[0].params == {**TrialRecord.of(dead[0]).proposal, **dead[0].params}
    latest = slots_filled(study)
    assert sorted(latest) == list(range(9))
    assert all(t.state.name == "COMPLETE" for t in latest.values())
    # 4 initial positions and 5 of generation 1, or (1 run in 10 here; why is not pinned
    # down) one more generation-0 child: the resume asked a trial before the dead one was
    # failed; both lose nothing
    generations = Counter(TrialRecord.of(t).generation for t in latest.values())
    assert generations in ({0: 4, 1: 5}, {0: 5, 1: 4}), generations


def journal_trials(path):
    """The journal's trials, read as another process would (an unreadable moment: none)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    try:
        return load(JournalStorage(JournalFileBackend(str(path)))).trials
    except Exception:
        return []


@pytest.mark.slow
def test_a_dead_worker_of_another_machine_on_a_journal_is_retried_after_the_grace(
        cli_process, tmp_path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path, url = tmp_path / "k.log", f"journal:///{tmp_path}/k.log"
    worker = start_worker(tmp_path, url)
    try:
        wait_for(lambda: sum(t.state.name == "COMPLETE" for t in journal_trials(path)) >= 2
                 and any(t.state.name == "RUNNING" and t.params for t in journal_trials(path)),
                 timeout=300)
    finally:  # killed whether or not it got there: no worker outlives the test
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    storage = JournalStorage(JournalFileBackend(str(path)))
    dead = next(t for t in load(storage).trials if t.state.name == "RUNNING")
    # as if its worker ran on another machine, whose processes this one cannot look up:
    # only the heartbeat, stopped since the kill, tells that it is dead
    storage.set_trial_user_attr(dead._trial_id, contents.WORKER, ["elsewhere", 1, None])
    cli_process(*SLOW, "--storage", url, check=True, timeout=900)
    study = load(storage)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    assert study.trials[dead.number].state.name == "FAIL"
    retries = [t for t in study.trials if t.system_attrs.get(RETRY_OF) == dead.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert sorted(slots_filled(study)) == list(range(9))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_ctrl_c_leaves_a_consistent_study_that_resumes(cli_process, tmp_path, stop):
    db = tmp_path / "k.db"
    worker = start_worker(tmp_path, f"sqlite:///{db}")
    wait_for(lambda: states(db)["COMPLETE"] >= 1 and states(db)["RUNNING"] == 1)
    worker.send_signal(stop)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 130, stderr[-2000:]
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    interrupted = states(db)
    # the trial in training was failed and marked for retry (or, had the signal come
    # between trials, the search stopped after the storage write): nothing left running
    assert interrupted["RUNNING"] == 0 and interrupted["FAIL"] <= 1
    cli_process(*SLOW, "--storage", f"sqlite:///{db}", check=True, timeout=900)
    study = load(f"sqlite:///{db}")
    latest = slots_filled(study)
    assert sorted(latest) == list(range(9))
    assert all(t.state.name == "COMPLETE" for t in latest.values())


@pytest.mark.slow
def test_two_workers_started_together_on_a_new_sqlite_file_fill_the_budget_exactly(cli, tmp_path):
    command = [sys.executable, "-m", "biotune_optuna.cli", *SEARCH, "--storage",
               f"sqlite:///{tmp_path}/k.db", "-q"]
    workers = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = load(f"sqlite:///{tmp_path}/k.db")
    assert Counter(t.state.name for t in study.trials) == {"COMPLETE": 12}
    status = cli("status", "--study-name", "k", "--storage", f"sqlite:///{tmp_path}/k.db",
                 check=True)
    assert "remaining: 0 of 12 trials" in status.stdout


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(tmp_path, postgres_url):
    command = [sys.executable, "-m", "biotune_optuna.cli", "search", "--study-name", "pg",
               "--storage", postgres_url, "--dataset", "digits", "--model", "tiny",
               "--trials", "16", "--epochs", "3", "--population", "4", "--elite", "1", "-q"]
    workers = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = load(postgres_url, "pg")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 16
    slots = [TrialRecord.of(t).slot for t in study.trials]
    assert len(slots) == len(set(slots))
    assert study.user_attrs["biotune_optuna:config"]["population"] == 4


def one_line_error(result, *fragments):
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
def test_bad_inputs_get_one_line_errors(cli, tmp_path):
    base = ["search", "--model", "tiny", "--trials", "1", "--epochs", "1", "-q"]
    (tmp_path / "notes.db").write_text("these are notes, not a database")
    one_line_error(cli(*base, "--storage", f"sqlite:///{tmp_path}/notes.db"),
                   "is not an SQLite database")
    (tmp_path / "file").write_text("")
    one_line_error(cli(*base, "--storage", f"sqlite:///{tmp_path}/file/sub/x.db"),
                   "cannot create the studies directory")
    one_line_error(cli(*base, "--model", "resnet9000"), "unknown model 'resnet9000'")
    one_line_error(cli(*base, "--dataset", "nosuchset"), "unknown dataset 'nosuchset'")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    one_line_error(cli(*base, "--dataset", tmp_path / "empty"), "has no images")
    one_line_error(cli(*base, "--population", "2"), "--population must be at least 3")
    one_line_error(cli(*base, "--population", "4", "--elite", "4"), "--elite must be between")
    one_line_error(cli(*base, "--epochs", "0"), "--epochs must be at least 1")
    one_line_error(cli(*base, "--storage", "postgresql://nobody@127.0.0.1:1/none"),
                   "cannot open storage")
    one_line_error(cli(*base, "--epochs", "two"), "--epochs takes an integer")
    one_line_error(cli("status", "--storage", f"sqlite:///{tmp_path}/none.db",
                       "--study-name", "x"), "no storage file", "none.db")
    assert not (tmp_path / "none.db").exists()  # a command that reads creates nothing
    optuna.create_study(storage=f"sqlite:///{tmp_path}/some.db", study_name="y")
    one_line_error(cli("status", "--storage", f"sqlite:///{tmp_path}/some.db",
                       "--study-name", "x"), "no study named 'x'")


@pytest.mark.slow
def test_resuming_with_other_settings_names_the_differences(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    cli(*SEARCH, "--storage", storage, "-q", check=True)
    one_line_error(cli(*search(epochs=3), "--storage", storage, "-q"),
                   "epochs: study has 2, now 3", "use the same options")
    assert len(load(storage).trials) == 12


@pytest.mark.slow
def test_a_study_from_before_train_head_resumes_with_the_paper_genome(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    cli(*search(trials=4), "--storage", storage, "--no-train-head", "-q", check=True)
    study = load(storage)
    config = dict(study.user_attrs["biotune_optuna:config"])
    del config["train_head"], config["trainable_penalty"]  # before the options existed
    study.set_user_attr("biotune_optuna:config", config)
    one_line_error(cli(*search(trials=5), "--storage", storage, "--train-head", "-q"),
                   "train_head: study has False, now True")
    cli(*search(trials=5), "--storage", storage, "--no-train-head", "-q", check=True)
    assert len(load(storage).trials) == 5
    # with no option but its name and storage, a study resumes as it was created
    cli("search", "--study-name", "k", "--storage", storage, "--trials", "6", "-q",
        check=True)
    assert len(load(storage).trials) == 6
    legacy = config_of(load(storage))
    assert legacy.train_head is False and legacy.trainable_penalty == 0.0


@pytest.mark.slow
def test_trainable_penalty_is_part_of_the_study(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    cli(*search(trials=4), "--storage", storage, "--trainable-penalty", "0.2", "-q", check=True)
    for trial in load(storage).trials:  # the metric is balanced accuracy
        validation = trial.user_attrs["val_balanced_accuracy"]
        assert trial.value == pytest.approx(
            validation - 0.2 * trial.user_attrs["trainable_fraction"])
    one_line_error(cli(*search(trials=5), "--storage", storage, "--trainable-penalty", "0",
                       "-q"), "trainable_penalty: study has 0.2, now 0.0")
    one_line_error(cli(*search(trials=5), "--storage", storage, "--trainable-penalty", "-1"),
                   "--trainable-penalty must be a non-negative number")


@pytest.mark.slow
def test_help_has_examples_for_every_command(cli):
    for command in ("search", "status", "best", "export", "train-best", "dashboard",
                    "studies", "demo"):
        result = cli(command, "--help", check=True)
        assert "examples:" in result.stdout and "biotune-optuna" in result.stdout


def exit_code_and_error(capsys, *argv):
    """Run the command in this process: its exit code and its stderr's lines."""
    from biotune_optuna.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as parse_error:
        code = parse_error.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv, fragment", [
    (["search", "--n-jobs", "0"], "--n-jobs: expected an integer of at least 1"),
    (["search", "--n-jobs", "-3"], "--n-jobs: expected an integer of at least 1"),
    (["dashboard", "--storage", "sqlite:///k.db", "--port", "99999"], "between 1 and 65535"),
    (["export", "--storage", "sqlite:///k.db", "--out", "no/such/dir/x.json"],
     "folder no/such/dir does not exist"),
    (["export", "--storage", "sqlite:///k.db", "--out", "."], "is a folder"),
    (["train-best", "--storage", "sqlite:///k.db", "--top-k", "0"], "--top-k: expected"),
    (["baseline", "--rank", "0"], "--rank: expected an integer of at least 1"),
    (["baseline", "--alpha", "-1"], "--alpha: expected a number of at least 0"),
    (["search", "--shots", "many"], "--shots takes an integer or all, got 'many'"),
    (["status", "--storage", "sqlite:///folder"], "folder is a folder"),
    (["search", "--storage", "sqlite:///folder", "--model", "tiny"], "folder is a folder"),
    (["status", "--storage", "journal:///folder"], "folder is a folder"),
    (["best", "--storage", "sqlite:///plain.db"], "holds no fine-tuning plans"),
    (["export", "--storage", "sqlite:///plain.db"], "holds no fine-tuning plans"),
    (["plot", "--storage", "sqlite:///plain.db", "--out", "p"], "holds no fine-tuning plans"),
    (["search", "--config", "folder"], "config file folder is a folder"),
    (["search", "--model", "tiny", "--train-seeds", "0,0"], "--train-seeds repeats a seed"),
    (["train-best", "--storage", "sqlite:///plain.db", "--seeds", ""], "--seeds takes integers"),
    (["compare", "--model", "tiny", "--seeds", ""], "--seeds takes integers"),
    (["compare", "--model", "tiny", "--seeds", "1,1"], "--seeds lists 1 twice"),
    (["compare", "--samplers", "tpe,tpe"], "--samplers lists tpe twice"),
    (["compare", "--samplers", "bo"], "--samplers has unknown name 'bo'"),
    (["baseline", "--method", "full,full"], "--method lists full twice"),
    (["baseline", "--method", ""], "--method has unknown name ''"),
    (["search", "--sampler", "tpe", "--elite-pair-mean"],
     "--elite-pair-mean applies to the biotune sampler only, not tpe"),
    (["search", "--sampler", "random", "--exploration-rate", "0.1"],
     "--exploration-rate applies to the biotune sampler only"),
    (["search", "--sampler", "tpe", "--pruner", "median", "--multi-fidelity"],
     "drop --pruner median or give --no-multi-fidelity"),
    (["search", "--multi-fidelity", "--epochs", "3", "--low-epochs", "4"],
     "--low-epochs (4) below --epochs (3)"),
    (["search", "--multi-fidelity", "--elite", "0"], "--elite must be at least 1"),
    (["search", "--compute-budget", "0"], "--compute-budget must be at least 1"),
    (["search", "--folds", "3", "--shots", "2"], "some empty; use --folds 2 or fewer"),
    (["search", "--low-epochs", "2"], "add --multi-fidelity or drop --low-epochs"),
    (["status", "--storage", "u6.db"], "is not a storage URL; a file is sqlite:///u6.db"),
    (["search", "--storage", "mysql://u@127.0.0.1/x", "--model", "tiny"],
     "driver is not installed: pip install pymysql"),
    (["status", "--storage", "sqlite:///foreign.sqlite"], "of something else (tables: t)"),
    (["search", "--storage", "sqlite:///foreign.sqlite", "--model", "tiny"],
     "not Optuna's; pass another --storage file"),
    (["search", "--dataset", "./nope/", "--model", "tiny"], "no such folder or file './nope/'"),
])
def test_more_bad_inputs_get_one_line_errors(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    optuna.create_study(storage="sqlite:///plain.db", study_name="plain").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with sqlite3.connect(tmp_path / "foreign.sqlite") as foreign:  # another program's data
        foreign.execute("create table t (x)")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = exit_code_and_error(capsys, *argv)
    assert code == 2 and len(err) == 1 and fragment in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind


@pytest.mark.slow
def test_a_journal_url_names_a_file_as_sqlite_urls_do(cli, tmp_path):
    """journal:///studies/k.log is studies/k.log under the current folder (SQLAlchemy's
    convention for SQLite); journal:////abs/k.log an absolute path."""
    cli(*search(trials=2, population=3), "--storage", "journal:///studies/k.log", "-q",
        check=True)
    assert (tmp_path / "studies" / "k.log").is_file()
    absolute = tmp_path / "abs" / "k.log"
    cli(*search(trials=2, population=3), "--storage", f"journal:///{absolute}", "-q",
        check=True)
    assert absolute.is_file()
    status = cli("status", "--storage", f"journal:///{absolute}", check=True).stdout
    assert "2 trials (2 complete)" in status


def test_a_short_password_does_not_mangle_the_error(capsys):
    code, err = exit_code_and_error(capsys, "search", "--model", "tiny", "--storage",
                                    "postgresql://u:p@127.0.0.1:1/x")
    assert code == 2 and "cannot open storage postgresql://u:***@127.0.0.1:1/x" in err[0], err


@pytest.mark.slow
def test_a_noise_aware_search_from_the_command_line(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/k.db"
    cli(*search(trials=8, population=3, elite=1), "--rescore-elites", "--elite-pair-mean",
        "--storage", storage, "-q", check=True)
    study = load(storage)
    roles = Counter(TrialRecord.of(t).role for t in study.trials)
    assert roles["rescore"] == 1 and len(study.trials) == 8
    status = cli("status", "--storage", storage, check=True).stdout
    assert "generation 1: 5 of 5 trials finished" in status
    assert config_of(study).rescore_elites and config_of(study).elite_pair_mean
