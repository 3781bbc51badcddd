"""What the toolkit reports is what it did: the best plan of a study with re-scoring runs,
TOML files, study names and the files they name, studies that have no plan, messages of
interrupted commands, a reader that goes away, waits for dead workers, failing storages,
taken ports, and studies made in Python."""

import io
import json
import sqlite3
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from biotune_optuna import cli, contents
from biotune_optuna.app.config import ConfigError, SearchConfig, load_toml
from biotune_optuna.app.progress import SearchProgress
from biotune_optuna.app.reports import busy_seconds
from biotune_optuna.app.runner import Budget
from biotune_optuna.app.storage import describe_failure
from biotune_optuna.sampler.records import RECORD, RETRY_OF

optuna.logging.set_verbosity(optuna.logging.WARNING)
DIST = {"x": optuna.distributions.FloatDistribution(0, 1)}


def record(role, elite=None):
    return {RECORD: {"slot": 0, "generation": 1, "role": role, "elite": elite}}


def test_a_lucky_rescoring_run_is_never_the_best_plan():
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(params={"x": 0.2}, distributions=DIST, value=0.35))
    study.add_trial(create_trial(params={"x": 0.7}, distributions=DIST, value=0.6))
    study.add_trial(create_trial(params={"x": 0.2}, distributions=DIST, value=0.71,
                                 system_attrs=record("rescore", 0)))
    best, second = contents.ranked_plans(study)
    assert (best.trial.number, best.value, best.evaluations) == (1, 0.6, 1)
    assert (second.trial.number, second.value, second.evaluations) == (0, 0.53, 2)
    assert study.best_trial.number == 2  # Optuna's: the single highest trial
    assert contents.describe_value(second) == "0.5300 (mean of 2 evaluations)"


def test_toml_top_level_keys_and_a_search_table_are_both_used(tmp_path):
    path = tmp_path / "mixed.toml"
    path.write_text('study-name = "mixed"\nmodel = "tiny"\n[search]\nepochs = 1\n')
    assert load_toml(path) == {"study_name": "mixed", "model": "tiny", "epochs": 1}
    path.write_text('epochs = 2\n[search]\nepochs = 1\n')
    with pytest.raises(ConfigError, match="sets 'epochs' both at the top level and in"):
        load_toml(path)
    path.write_text('epochs = 2\n[training]\nlr = 1\n')
    with pytest.raises(ConfigError, match=r"has a \[training\] table"):
        load_toml(path)


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", ".."])
def test_a_study_name_that_is_not_a_file_name_is_refused(name):
    with pytest.raises(ConfigError, match="cannot name a file"):
        SearchConfig(study_name=name)
    assert contents.file_name(name) not in ("", ".", "..") and "/" not in contents.file_name(name)


@pytest.mark.slow
def test_a_study_whose_trials_all_failed_says_so_and_why(tmp_path):
    storage = f"sqlite:///{tmp_path}/f.db"
    study = optuna.create_study(study_name="f", storage=storage)
    study.set_user_attr(contents.BLOCKS, {"head": {"modules": ["fc"], "n_params": 1}})
    for _ in range(3):
        study.add_trial(create_trial(state=TrialState.FAIL, params={"gene:head": 0.5},
                                     distributions={"gene:head": DIST["x"]},
                                     user_attrs={contents.FAILED_REASON: "training loss became "
                                                 "nan; lower the base learning rate"}))
    for command in ("best", "export", "plot", "train-best"):
        code, _, err = run(command, "--storage", storage, "--study-name", "f", cwd=tmp_path)
        assert code == 2 and len(err) == 1, (command, err)
        assert ("all 3 failed or were pruned (3 fail); the first failure: training loss "
               "became nan" in err[0])
    assert not (tmp_path / "plots").exists()


def run(*argv, cwd=None, monkeypatch=None):
    """``main`` in this process: (exit code, stdout, stderr lines)."""
    import contextlib
    import os

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(argv))
    finally:
        os.chdir(old)
    return code, out.getvalue(), [line for line in err.getvalue().splitlines() if line]


def test_interrupted_commands_say_what_was_kept(monkeypatch):
    def interrupted(args):
        """Interrupted."""
        raise KeyboardInterrupt

    for command, words in (("search", "the study is consistent"),
                           ("baseline", "nothing was saved"),
                           ("train-best", "nothing was saved")):
        monkeypatch.setattr(cli, f"cmd_{command.replace('-', '_')}", interrupted)
        code, _, err = run(command, "--study-name", "k")
        assert code == 130 and words in err[-1], command


def test_a_reader_that_goes_away_is_no_error(monkeypatch, capsys):
    def print_lots(args):
        """Prints more than the reader reads."""
        raise BrokenPipeError
    monkeypatch.setattr(cli, "cmd_studies", print_lots)
    assert cli.main(["studies", "--storage", "sqlite:///x.db"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_the_wait_for_a_dead_worker_is_said_once_with_its_deadline(capsys):
    study = optuna.create_study()
    progress = SearchProgress(study, Budget(trials=3), grace=180)
    running = [study.ask() for _ in range(2)]
    for _ in range(3):
        progress.waiting(running)
    progress.close()
    said = [line for line in capsys.readouterr().err.splitlines() if "waiting" in line]
    assert len(said) == 1 and "heartbeat is 180 s old (--grace)" in said[0]
    quiet = SearchProgress(study, Budget(trials=3), quiet=True)
    quiet.waiting(running)
    assert "waiting" not in capsys.readouterr().err


def test_time_waiting_for_a_dead_worker_is_not_searching():
    start = datetime(2026, 1, 1)
    study = optuna.create_study()
    dead = create_trial(state=TrialState.FAIL)
    dead.datetime_start, dead.datetime_complete = start, start + timedelta(seconds=200)
    alive = create_trial(value=1.0, system_attrs={RETRY_OF: 0})
    alive.datetime_start = start + timedelta(seconds=200)
    alive.datetime_complete = start + timedelta(seconds=210)
    study.add_trials([dead, alive])
    assert busy_seconds(study.get_trials()) == 10


def test_a_storage_that_fails_under_a_command_is_one_line(tmp_path):
    from biotune_optuna.app.storage import open_storage

    gone = tmp_path / "gone.db"
    open_storage(f"sqlite:///{gone}", heartbeat=None)
    gone.unlink()
    assert "disappeared while the command ran" in describe_failure(
        AssertionError("Should not reach"), f"sqlite:///{gone}")
    # a file never opened (the command failed before it made it): the real cause is shown
    assert describe_failure(ValueError("a builder's bug"),
                            f"sqlite:///{tmp_path / 'never.db'}") is None
    (tmp_path / "ro.db").touch()
    try:
        sqlite3.connect(f"file:{tmp_path / 'ro.db'}?mode=ro", uri=True).execute(
            "create table t (x)")
    except sqlite3.OperationalError as error:
        from sqlalchemy.exc import OperationalError

        wrapped = OperationalError("create table t", {}, error)
        message = describe_failure(wrapped, f"sqlite:///{tmp_path / 'ro.db'}")
        assert "failed while the command ran (attempt to write a readonly database)" in message
    assert describe_failure(ValueError("a bug"), f"sqlite:///{tmp_path / 'ro.db'}") is None


def test_a_taken_port_is_refused_before_the_server_starts(tmp_path):
    import socket

    storage = f"sqlite:///{tmp_path}/d.db"
    optuna.create_study(study_name="d", storage=storage)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run("dashboard", "--storage", storage, "--port", str(port))
    assert code == 2 and len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0]
    assert "optuna-dashboard on" not in out


def test_a_study_made_in_python_is_readable_by_the_command_line(tmp_path):
    from biotune_optuna.app.objective import FineTuneObjective
    from biotune_optuna.finetuning.build import build_task
    from biotune_optuna.finetuning.train import TrainConfig
    from biotune_optuna.sampler import BioTuneSampler, search_space

    task = build_task("tiny", "digits", shots=3)
    sampler = BioTuneSampler(3, 1, seed=0, search_space=search_space(task.block_names))
    storage = f"sqlite:///{tmp_path}/py.db"
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=storage,
                                study_name="py", pruner=optuna.pruners.NopPruner())
    study.optimize(FineTuneObjective(task, TrainConfig(epochs=1), seeds=(0,), train_head=True),
                   n_trials=4)
    config = study.user_attrs[contents.CONFIG]
    assert (config["model"], config["dataset"], config["sampler"], config["pruner"],
            config["population"], config["epochs"]) == ("tiny", "digits", "biotune", "none", 3, 1)
    assert study.user_attrs[contents.INPUT]["size"] == 28
    code, out, _ = run("export", "--storage", storage, "--format", "python")
    assert code == 0 and "base_lr = 0.001" in out and "block_modules = {}" not in out
    code, out, _ = run("best", "--storage", storage)
    plan = json.loads(out)
    assert code == 0 and plan["model"] == "tiny" and plan["base_lr"] == 0.001


def test_a_bare_sampler_study_is_reported_right_or_says_what_to_record(tmp_path):
    """The README's "sampler on its own" route: no plan attrs, no configuration, no
    modules. Reports decode the plans from the genes; what needs more says which call
    records it; after record_model the exported snippet freezes what the plan freezes."""
    import torchvision

    from biotune_optuna import BioTuneSampler, decode, record_model, search_space, suggest_genome

    blocks = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    storage = f"sqlite:///{tmp_path}/mine.db"
    study = optuna.create_study(direction="maximize", storage=storage, study_name="mine",
                                sampler=BioTuneSampler(4, 1, seed=0,
                                                       search_space=search_space(blocks)))
    study.enqueue_trial({**{f"gene:{b}": 0.9 for b in blocks}, "gene:stem": 0.0,
                         "gene:layer1": 0.0})  # freezes stem and layer1 (threshold below)
    study.optimize(lambda t: 1.0 - sum(decode(suggest_genome(t, blocks), blocks).trained) / 100
                   + (t.number == 0), n_trials=6)
    plan = decode(study.best_trial.params, blocks)
    assert plan.frozen_blocks  # the enqueued plan won and freezes something
    code, out, _ = run("status", "--storage", storage)
    assert code == 0 and f"trains {', '.join(plan.trained_blocks)}" in out
    code, out, _ = run("best", "--storage", storage)
    best = json.loads(out)
    assert best["frozen_blocks"] == plan.frozen_blocks and best["learning_rates"] is None
    code, _, err = run("export", "--storage", storage, "--format", "python")
    assert code == 2 and len(err) == 1 and "record_model(study, model" in err[0]
    code, _, err = run("train-best", "--storage", storage)
    assert code == 2 and len(err) == 1 and "model and data are unknown" in err[0]

    model = torchvision.models.resnet18(num_classes=3)
    with pytest.raises(ValueError, match="not the study's genes"):
        record_model(study, torchvision.models.vgg11(), base_lr=1e-3)
    record_model(study, model, base_lr=1e-3)
    code, out, _ = run("export", "--storage", storage, "--format", "python")
    assert code == 0 and "base_lr = 0.001" in out
    namespace = {}
    exec(out, namespace)
    groups, _ = namespace["biotune_param_groups"](model)
    assert [g["name"] for g in groups] == plan.trained_blocks
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("conv1", "bn1", "layer1")) for n in frozen)
