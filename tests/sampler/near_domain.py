"""The synthetic task that most sampler tests search, and a seeded search of it."""

import optuna

from biotune_optuna import BioTuneSampler
from biotune_optuna.sampler.synthetic import TASKS

TASK = TASKS["near-domain"]


def sampler(seed=0, **options) -> BioTuneSampler:
    return BioTuneSampler(6, 2, seed=seed, search_space=TASK.search_space, ideal_value=1.0,
                          **options)


def search(generations=5, n_jobs=1, storage=None, **options) -> optuna.Study:
    s = sampler(**options)
    study = optuna.create_study(direction="maximize", sampler=s, storage=storage)
    study.optimize(TASK, n_trials=s.n_trials(generations), n_jobs=n_jobs)
    return study
