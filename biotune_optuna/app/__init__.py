"""The application: options, storage and the search runner, the objective, the jobs behind
the command line (search, train-best, baseline, compare, demo), reports, export and
optuna-dashboard integration. It builds on the sampler and the fine-tuning engine.
"""
