"""Names of the study user attrs biotune_optuna writes (readable in optuna-dashboard)."""

CONFIG = "biotune_optuna:config"  # the search configuration (its fingerprint) and blocks
BLOCKS = "biotune_optuna:blocks"  # block -> modules and parameter count
BUDGET = "biotune_optuna:budget"  # trials the last search command asked for
FINAL = "biotune_optuna:final"  # test results of train-best
DEMO = "biotune_optuna:demo"  # the demo's summary
