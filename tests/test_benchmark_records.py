"""benchmarks/records: the committed results and studies of the runs that span sessions.
A run on a fresh clone goes on from them and ``--report`` reads them, so a file that no
longer parses (a merge, a cut-off copy) must fail here rather than there."""

import pytest

from benchmarks.common import RECORDS, finished, recorded_storage
from biotune_optuna.app.storage import open_storage

REPORTED = {"search": {"test", "trainable", "trials", "epochs", "plan"},
            "test": {"test", "trainable"}}


def results_files():
    return sorted(RECORDS.glob("real-*.json"))


@pytest.mark.parametrize("path", results_files(), ids=lambda p: p.name)
def test_each_finished_run_holds_what_the_report_reads(path):
    found = finished(path, lambda kind, _: kind in REPORTED)
    for method, by_seed in found.items():
        for seed, record in by_seed.items():
            kind = "search" if "plan" in record else "test"
            assert REPORTED[kind] <= record.keys(), (path.name, method, seed)


def journals():
    return sorted(RECORDS.glob("**/*.log"))


@pytest.mark.parametrize("path", journals(), ids=lambda p: str(p.relative_to(RECORDS)))
def test_each_recorded_study_opens_read_only(path):
    name = str(path.relative_to(RECORDS).with_suffix(""))
    storage = open_storage(recorded_storage(name), heartbeat=None, create=False)
    assert len(storage.get_all_studies()) == 1, path  # one study per journal
