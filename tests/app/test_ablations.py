"""The ablations through the command line: a genome variant is searched, resumed and exported
as it says, the operator ablations are stored with the study, and compare --variants runs
them side by side."""

import json

import optuna
import pytest

from tests.app.test_cli import one_line_error

TINY = ["--model", "tiny", "--shots", "5", "--epochs", "1", "--population", "3", "--elite",
        "1", "-q"]


def exported(cli, storage, name):
    return json.loads(cli("export", "--storage", storage, "--study-name", name,
                          check=True).stdout)


@pytest.mark.parametrize("variant", ["freeze-only", "lr-only"])
@pytest.mark.slow
def test_a_genome_variant_is_searched_resumed_and_exported_as_it_says(cli, tmp_path, variant):
    storage = f"sqlite:///{tmp_path}/v.db"
    cli("search", "--study-name", "v", "--storage", storage, "--genome", variant, *TINY,
        "--trials", "4", check=True)
    resumed = cli("search", "--study-name", "v", "--storage", storage, "--trials", "6",
                  "-q", check=True)  # the stored variant, without naming it again
    assert "best plan" in resumed.stdout
    study = optuna.load_study(study_name="v", storage=storage)
    assert len(study.trials) == 6
    assert study.user_attrs["biotune_optuna:config"]["genome"] == variant
    has_threshold = {"threshold" in t.params for t in study.trials}
    assert has_threshold == {variant != "lr-only"}
    plan = exported(cli, storage, "v")
    if variant == "freeze-only":
        assert set(plan["lr_multipliers"].values()) == {1.0}
    else:
        assert plan["frozen_blocks"] == [] and len(set(plan["lr_multipliers"].values())) > 1
    one_line_error(cli("search", "--study-name", "v", "--storage", storage, "--genome",
                       "full", *TINY, "--trials", "7"), "genome")


@pytest.mark.slow
def test_operator_ablations_are_stored_and_refused_for_other_samplers(cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/o.db"
    cli("search", "--study-name", "o", "--storage", storage, "--no-mutation",
        "--no-elite-search", "--no-adoption", "--no-immigrants", *TINY, "--trials", "5",
        check=True)
    config = optuna.load_study(study_name="o", storage=storage).user_attrs[
        "biotune_optuna:config"]
    assert [config[k] for k in ("mutation", "elite_search", "adoption", "immigrants")] == \
        [False] * 4
    one_line_error(cli("search", "--sampler", "tpe", "--no-mutation", *TINY),
                   "--mutation applies to the biotune sampler only")


@pytest.mark.slow
def test_compare_runs_variants_side_by_side(cli, tmp_path):
    result = cli("compare", "--study-name", "abl", "--storage", f"sqlite:///{tmp_path}/c.db",
                 "--variants", "full,freeze-only,no-mutation", "--seeds", "0", "--trials", "4",
                 *TINY, "--out", tmp_path / "plots", check=True)
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:5]]
    assert rows == ["full", "freeze-only", "no-mutation"]
    assert (tmp_path / "plots" / "abl_convergence.png").exists()
    names = optuna.get_all_study_names(f"sqlite:///{tmp_path}/c.db")
    assert sorted(names) == ["abl-freeze-only-s0", "abl-full-s0", "abl-no-mutation-s0"]
    one_line_error(cli("compare", "--samplers", "tpe", "--variants", "no-adoption", *TINY),
                   "changes BioTune's operators")
    one_line_error(cli("compare", "--variants", "no-such"), "--variants has unknown name")
