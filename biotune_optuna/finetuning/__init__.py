"""The fine-tuning engine: datasets and splits, models and their blocks, pretraining of the
built-in networks, the training loop that applies a plan, baselines and evaluation. Torch
lives here and nowhere else; this package imports from the sampler layer only its plan type
(``sampler/plan.py``, which imports nothing).
"""
