"""What several benchmark scripts share: the folder of their studies and caches, the
transfer tasks and the paper's protocol, the search-cost tasks, a plan's retraining and
hand-over (cached), and a synthetic search's hand-over. A script imports this module and
:mod:`benchmarks.results`, never another script."""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from biotune_optuna import contents
from biotune_optuna.app.config import SearchConfig
from biotune_optuna.app.jobs import REVALIDATION_SEEDS, task_for
from biotune_optuna.finetuning.build import build_task
from biotune_optuna.finetuning.device import use_threads
from biotune_optuna.finetuning.models import cache_dir
from biotune_optuna.finetuning.train import TrainConfig, fine_tune
from biotune_optuna.sampler import genome
from biotune_optuna.sampler.plan import FineTunePlan

OUT = Path(__file__).with_name("out")
# results of the runs that span sessions: committed, since a session may start on a fresh
# machine with an empty OUT (studies there only resume a search cut short)
RECORDS = Path(__file__).with_name("records")

HANDOVER_TOP_K = 5  # plans a Retrainer's hand-over re-validates
TEST_SEEDS = (0, 1, 2)  # a Retrainer's test runs
RECHECK_TOP_K, RECHECKS = 5, 3  # a synthetic hand-over: plans re-evaluated, and how often


def recorded_storage(name: str) -> str:
    """Storage for a study of a multi-session run, kept in RECORDS: an Optuna journal (text
    lines; one torn by a commit mid-write is mended by the next writer), so a search cut
    short goes on from its last trial on a fresh clone too. One file per study: a finished
    one is never written again, so git stores it once."""
    return f"journal:///{RECORDS}/{name}.log"


def prepare(threads: int | None) -> None:
    """Quiet Optuna, torch's threads as asked, and the folders of studies and results."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if threads:
        use_threads(threads)
    OUT.mkdir(exist_ok=True)
    RECORDS.mkdir(exist_ok=True)


PAPER_PROTOCOL = {"batch_size": 96, "patience": 3}


@dataclass(frozen=True)
class Transfer:
    key: str
    source: str
    target: str
    note: str = ""


TRANSFERS = {
    "digits": Transfer("digits", "mnist5k", "digits"),
    "mnist": Transfer("mnist", "fashion", "mnist5k"),
    "fashion": Transfer("fashion", "mnist5k", "fashion"),
    "control": Transfer("control", "fashion", "digits", "negative control"),
}


def protocol_config(task: Transfer, args: argparse.Namespace) -> SearchConfig:
    """The model, data and training protocol that every method of a task shares."""
    return SearchConfig(model="small", weights=task.source, dataset=task.target,
                        shots=args.shots, epochs=30, patience=args.patience,
                        batch_size=args.batch_size)


def add_protocol_options(parser: argparse.ArgumentParser) -> None:
    """Tasks, seeds and the training protocol, shared with benchmarks.tuned_baselines."""
    parser.add_argument("--tasks", default=",".join(TRANSFERS),
                        help=f"comma-separated, of {', '.join(TRANSFERS)} (default: all)")
    parser.add_argument("--seeds", type=int, default=5,
                        help="data/search seeds 0..N-1 per method (default: 5)")
    parser.add_argument("--shots", type=int, default=10,
                        help="labels per class for training and for validation (default: 10)")
    parser.add_argument("--batch-size", type=int, default=PAPER_PROTOCOL["batch_size"],
                        help="batch size of every run (default: the paper's 96)")
    parser.add_argument("--patience", type=int, default=PAPER_PROTOCOL["patience"],
                        help="early-stopping patience in epochs (default: the paper's 3)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the tables without rewriting RESULTS.md")


def search_seconds(study) -> float:
    """Compute time of a search from its trials (right after a resume too)."""
    return sum((t.datetime_complete - t.datetime_start).total_seconds()
               for t in study.trials if t.datetime_complete and t.datetime_start)


def cell(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.4f} ± {values.std():.4f}"


COST_PROTOCOL = dict(population=10, elite=3, generations=10, train_seeds=[0, 1, 2], epochs=30,
                patience=3, seed=0, shots=10, dataset="digits", rescore_elites=False)
COST_TASKS = {
    "small": dict(model="small", weights="mnist5k"),
    "resnet18": dict(model="resnet18", image_size=32),  # weights: pretrained here, below
}


def resnet_source(seed: int = 0) -> str:
    """A torchvision ResNet-18 pretrained at 32x32 on mnist5k (the offline source dataset),
    its backbone cached so the benchmark pretrains once."""
    path = cache_dir() / "pretrained" / f"resnet18-mnist5k-32px-seed{seed}.pt"
    if path.is_file():
        return str(path)
    import torch

    task = build_task("resnet18", "mnist5k", weights="none", image_size=32, split_seed=seed,
                      activation_cache_mb=None)
    plan = FineTunePlan(tuple(task.block_names), (1.0,) * len(task.blocks))
    run = fine_tune(task, plan, TrainConfig(epochs=8, patience=8, batch_size=128), seed,
                    keep_model=True)
    print(f"pretrained resnet18 on mnist5k: validation accuracy {run.val.accuracy:.3f} in "
          f"{run.seconds:.0f} s", flush=True)
    heads = tuple(f"{h}." for h in task.model.heads)
    backbone = {k: v for k, v in run.model.state_dict().items() if not k.startswith(heads)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": backbone}, path)
    return str(path)


def task_config(part: str, key: str) -> SearchConfig:
    if part == "transfer":
        config = protocol_config(TRANSFERS[key], argparse.Namespace(shots=10, patience=3,
                                                                batch_size=96))
        return config.replace(population=6, elite=2, train_seeds=[0])
    options = dict(COST_TASKS[key])
    if key == "resnet18":
        options["weights"] = resnet_source()
    return SearchConfig(**{**COST_PROTOCOL, "generations": 10, **options})


def finished(path: Path, keep) -> dict[str, dict[int, dict]]:
    """{method: {seed: result}} of a benchmark's results file (keys ``kind|method|seed``),
    the entries ``keep(kind, method)`` accepts; empty before the first result."""
    cache = json.loads(path.read_text()) if path.exists() else {}
    found: dict[str, dict[int, dict]] = {}
    for key, value in cache.items():
        kind, method, *rest = key.split("|")
        if keep(kind, method):
            found.setdefault(method, {})[int(rest[0])] = value
    return found


class Retrainer:
    """Validation and test results of plans, cached in a JSON file: the same plan is
    retrained once, whichever search and checkpoint hand it over."""

    def __init__(self, config: SearchConfig, path: Path) -> None:
        self.config, self.path = config, path
        self.task = task_for(config)
        self.train = config.train_config()
        self.cache = json.loads(path.read_text()) if path.exists() else {}

    def _cached(self, kind: str, plan: FineTunePlan, compute) -> float:
        # keyed by the decoded plan: the same parameters decode differently per genome variant
        key = f"{kind}|{json.dumps(plan.multipliers)}"
        if key not in self.cache:
            value = compute(plan)
            self._store(key, value)
        return self.cache[key]

    def _store(self, key: str, value: float) -> None:
        """Merge into the file under a lock, then replace it whole: two benchmark processes
        (ablations and multifidelity share a task's cache) keep each other's entries, and a
        reader never sees half a file."""
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                self.cache.update(json.loads(self.path.read_text()))
            self.cache[key] = value
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, suffix=".tmp",
                                             delete=False) as handle:
                json.dump(self.cache, handle, indent=0, sort_keys=True)  # line diffs
            os.replace(handle.name, self.path)

    def validation(self, plan: FineTunePlan) -> float:
        def mean(plan) -> float:
            runs = [fine_tune(self.task, plan, self.train, s) for s in REVALIDATION_SEEDS]
            return (-math.inf if any(r.diverged for r in runs) else
                float(np.mean([r.value for r in runs])))
        return self._cached("val", plan, mean)

    def test(self, plan: FineTunePlan) -> float:
        def mean(plan) -> float:
            runs = [fine_tune(self.task, plan, self.train, s, evaluate_test=True)
                    for s in TEST_SEEDS]
            return float(np.mean([r.test.balanced_accuracy for r in runs]))
        return self._cached("test", plan, mean)

    def handover(self, study: optuna.Study, compute: float) -> float | None:
        """Test accuracy of the plan train-best would pick from the trials finished within
        ``compute`` epochs (None when none completed by then)."""
        within, spent = [], 0
        for trial in study.get_trials(deepcopy=False):  # one worker: number = finish order
            spent += contents.trial_compute(trial).epochs
            if spent > compute + 1e-9:
                break
            within.append(trial)
        candidates = contents.ranked_plans(study, within)[:HANDOVER_TOP_K]
        if not candidates:
            return None
        plans = {p.trial.number: contents.trial_plan(study, p.trial, self.task.block_names)
                 for p in candidates}
        chosen = max(candidates, key=lambda p: (self.validation(plans[p.trial.number]),
                                                -p.trial.number))
        return self.test(plans[chosen.trial.number])


def handed_over(task, study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The trial whose plan a synthetic search hands over, picked as train-best picks: its
    RECHECK_TOP_K best distinct plans re-evaluated RECHECKS times with fresh noise, best mean."""
    def truth(trial) -> float:
        return task.accuracy(genome.decode(trial.params, task.blocks))

    top, seen = [], set()  # distinct plans, best first, as train-best takes them
    for t in sorted((t for t in study.trials if t.value is not None), key=lambda t: -t.value):
        if tuple(t.params.items()) not in seen:
            seen.add(tuple(t.params.items()))
            top.append(t)
    rng = np.random.default_rng([task.seed, 10**6])
    rechecked = [np.mean(np.clip(truth(t) + rng.normal(0.0, task.noise, RECHECKS), 0, 1))
                 for t in top[:RECHECK_TOP_K]]
    return top[int(np.argmax(rechecked))]
