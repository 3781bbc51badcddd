"""BioTuneSampler on a synthetic fine-tuning objective: python -m biotune_optuna.sampler.example"""

import optuna

from biotune_optuna.sampler import BioTuneSampler, decode, search_space
from biotune_optuna.sampler.synthetic import TASKS


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = TASKS["near-domain"]  # stands in for "fine-tune the plan, return val. accuracy"
    blocks = list(task.blocks)
    sampler = BioTuneSampler(population_size=10, elite_size=3, seed=0,
                             search_space=search_space(blocks), ideal_value=1.0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(task, n_trials=sampler.n_trials(generations=10))  # 140 trials
    plan = decode(study.best_params, blocks)
    print(f"best {study.best_value:.4f}: trains {plan.trained_blocks}")


if __name__ == "__main__":
    main()
