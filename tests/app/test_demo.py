"""The demo's search is written once more, as a config file a user can start from."""

from biotune_optuna.app.config import load_toml
from biotune_optuna.app.demo import DEMO
from tests.conftest import REPO


def test_studies_demo_toml_holds_the_demos_search():
    stored = load_toml(REPO / "studies" / "demo.toml")
    assert stored.pop("study_name") == "demo-toml"
    assert stored == {k: v for k, v in DEMO.items() if k != "study_name"}
