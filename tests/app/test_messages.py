"""What the commands say where a user could be misled: a resume that runs nothing, a
three-slash path that looks absolute, studies of different tasks compared, a plan found by
another sampler, a penalised value."""

from tests.app.test_cli import one_line_error

TINY = ["--dataset", "digits", "--model", "tiny", "--epochs", "1", "--population", "3",
        "--elite", "1", "-q"]


def test_a_resume_whose_budget_is_spent_says_it_runs_nothing(cli):
    cli("search", "--study-name", "r", "--trials", "4", *TINY, check=True)
    again = cli("search", "--study-name", "r", "--trials", "2", *TINY, check=True)
    assert "the study has 4 trials already and --trials 2 counts the study's total" in (
        again.stderr)


def test_three_slashes_under_a_folder_that_exists_at_the_root_get_a_note(cli, tmp_path):
    done = cli("search", "--study-name", "t", "--storage", "sqlite:///tmp/t.db", "--trials",
               "1", *TINY, check=True)
    assert f"is {tmp_path / 'tmp' / 't.db'} (three slashes" in done.stderr
    assert "sqlite:////tmp/t.db for /tmp/t.db" in done.stderr
    quiet = cli("search", "--study-name", "u", "--storage", "sqlite:///u.db", "--trials", "1",
                *TINY, check=True)
    assert "three slashes" not in quiet.stderr  # a file in the current folder is plain


def test_plots_refuse_to_pool_studies_of_different_splits(cli, tmp_path):
    storage = ["--storage", "sqlite:///p.db"]
    for name, split in (("a", "0"), ("b", "1")):
        cli("search", "--study-name", name, *storage, "--split-seed", split, "--trials", "3",
            *TINY, check=True)
    one_line_error(cli("plot", "--study-name", "a", *storage, "--compare", "b", "--out", "p"),
                   "study 'b' has another --split-seed than 'a'", "same task")
    assert not (tmp_path / "p").exists()


def test_train_best_and_export_name_the_sampler_that_found_the_plan(cli):
    storage = ["--storage", "sqlite:///s.db", "--study-name", "s"]
    cli("search", *storage, "--sampler", "tpe", "--trials", "3", "--dataset", "digits",
        "--model", "tiny", "--epochs", "1", "-q", check=True)
    trained = cli("train-best", *storage, "--seeds", "0", "--top-k", "1", "--no-compare",
                  "-q", check=True)
    assert "TPE's plan" in trained.stdout and "BioTune" not in trained.stdout


def test_a_penalised_value_is_not_called_a_validation_value(cli):
    done = cli("search", "--study-name", "pen", "--trials", "3", "--trainable-penalty", "0.1",
               *TINY[:-1], check=True)
    assert "penalised value (validation - 0.1 x trainable fraction)" in done.stdout
