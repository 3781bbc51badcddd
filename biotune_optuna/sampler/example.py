"""BioTuneSampler on a synthetic fine-tuning objective, loaded the way OptunaHub loads a
package: ``python example.py`` in this folder, in a registry checkout or in the toolkit."""

from pathlib import Path

import optuna
import optunahub

# A published package loads with optunahub.load_module("samplers/biotune"); offline, the same
# folder loads from a local registry tree (here: this folder and its parent).
here = Path(__file__).resolve().parent
biotune = optunahub.load_local_module(here.name, registry_root=str(here.parent))


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = biotune.synthetic.TASKS["near-domain"]  # stands in for "fine-tune, return val. accuracy"
    blocks = list(task.blocks)
    sampler = biotune.BioTuneSampler(population_size=10, elite_size=3, seed=0,
                                     search_space=biotune.search_space(blocks), ideal_value=1.0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(task, n_trials=sampler.n_trials(generations=10))  # 140 trials
    plan = biotune.decode(study.best_params, blocks)
    print(f"best {study.best_value:.4f}: trains {plan.trained_blocks}")

    # Two objectives: accuracy against the plan's training FLOPs (a fraction of full
    # fine-tuning's); the search returns the front of the trade-off. A plan's cost is known
    # before it trains, so pre-selection computes it; elite search and adoption, which pull
    # toward the front's two ends, are off (the README says why).
    costly = biotune.synthetic.COST_AWARE["near-domain"]
    sampler = biotune.BioTuneSampler(population_size=10, elite_size=3, seed=0,
                                     search_space=biotune.search_space(blocks),
                                     known_values=costly.known_values,
                                     **biotune.FRONT_SETTINGS)
    study = optuna.create_study(directions=costly.directions, sampler=sampler)
    study.optimize(costly, n_trials=sampler.n_trials(generations=10))
    for trial in sorted(study.best_trials, key=lambda t: t.values[1]):
        accuracy, cost = trial.values
        trained = biotune.decode(trial.params, blocks).trained_blocks
        print(f"front: accuracy {accuracy:.3f} at {cost:.0%} of full fine-tuning's cost, "
              f"trains {trained}")


if __name__ == "__main__":
    main()
