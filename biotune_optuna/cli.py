"""The ``biotune-optuna`` command: search, inspect, export and retrain fine-tuning plans.

Exit codes: 0 success, 1 a failure while running, 2 a usage or input error (one line on
stderr, no traceback), 130 interrupted (a search's study stays consistent; run the same
command again to resume it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import textwrap
import traceback
from dataclasses import MISSING, fields
from pathlib import Path

import optuna

from biotune_optuna import contents
from biotune_optuna.app.config import (
    AUTOMATIC,
    DEFAULT_SAMPLERS,
    FRONT_SAMPLERS,
    LR_GRID,
    SAMPLERS,
    VARIANTS,
    ConfigError,
    SearchConfig,
    flag,
    load_toml,
    make_config,
    refuse_unused,
    spec_of,
)
from biotune_optuna.app.files import write_whole
from biotune_optuna.app.storage import StorageError, describe_failure, open_storage
from biotune_optuna.app.storage_urls import ENV_VAR, from_environment, scrubbed
from biotune_optuna.app.studies import (
    config_for_baseline,
    existing_study,
    load_searched_study,
    load_study,
    refuse_other_tasks,
    storage_url,
    stored_options,
)
from biotune_optuna.finetuning.names import BASELINES, DataError, DeviceError, ModelError

USER_ERRORS = (ConfigError, DataError, DeviceError, ModelError, StorageError)
logger = logging.getLogger("biotune_optuna")

EXAMPLES = {
    "search": """
        biotune-optuna search --study-name k --storage sqlite:///k.db --dataset digits \\
            --model tiny --trials 12 --epochs 2 --population 4 --elite 1 --seed 0
        biotune-optuna search --config studies/demo.toml --trials 200
        biotune-optuna search --model resnet50 --weights IMAGENET1K_V2 \\
            --dataset Flowers102 --data-root ~/data --shots 10 --device cuda
        # several workers on one PostgreSQL study: run the same command on each machine
        biotune-optuna search --storage postgresql://me:pw@db/biotune --study-name flowers""",
    "status": "biotune-optuna status --storage sqlite:///k.db --study-name k",
    "best": "biotune-optuna best --storage sqlite:///k.db --study-name k",
    "export": """
        biotune-optuna export --storage sqlite:///k.db --study-name k --out plan.json
        biotune-optuna export --storage sqlite:///k.db --study-name k --format python""",
    "train-best": "biotune-optuna train-best --storage sqlite:///k.db --study-name k "
                  "--seeds 0,1,2 --out best.pt",
    "dashboard": "biotune-optuna dashboard --storage sqlite:///studies/demo.db --port 8080",
    "baseline": """
        biotune-optuna baseline --method full,linear,l2sp,l1sp,autorgn,lora --model small \\
            --dataset digits --shots 10 --seeds 0,1,2,3,4
        biotune-optuna baseline --config studies/demo.toml --method lora --rank 8""",
    "compare": """
        biotune-optuna compare --study-name cmp --samplers biotune,tpe,random,cmaes \\
            --seeds 0,1,2,3,4 --trials 46 --population 6 --elite 2 --model small \\
            --dataset digits
        biotune-optuna compare --study-name abl --variants full,freeze-only,lr-only,no-mutation \
            --seeds 0,1,2,3,4 --trials 46 --population 6 --elite 2""",
    "studies": "biotune-optuna studies --storage sqlite:///studies/demo.db",
    "plot": """
        biotune-optuna plot --storage sqlite:///studies/demo.db --study-name demo --out plots
        biotune-optuna plot --storage sqlite:///c.db --study-name c-biotune-s0 \\
            --compare c-biotune-s1,c-tpe-s0,c-tpe-s1""",
    "demo": """
        biotune-optuna demo            # 46 trials (times: benchmarks/RESULTS.md, The demo)
        biotune-optuna demo --quick    # 9 trials""",
}


def _examples(name: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(EXAMPLES[name]).strip(), "  ")


def _help(name: str, with_default: bool = True) -> str:
    """An option's help from its declaration, with its default."""
    f = next(f for f in fields(SearchConfig) if f.name == name)
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    text = spec_of(f).help
    if spec_of(f).choices:
        text += f": {', '.join(spec_of(f).choices)}"
    if name in AUTOMATIC and with_default:
        alone, front = AUTOMATIC[name]
        return f"{text} (default: {alone}; {front} when --objectives has costs)"
    return text if default is None or not with_default else f"{text} (default: {shown})"


ALL_GROUPS = ("study", "task", "training", "search", "run")
TRAINING_GROUPS = ("study", "task", "training", "run")  # what a baseline may be given


def _add_search_options(parser: argparse.ArgumentParser, groups=ALL_GROUPS,
                        skip: tuple[str, ...] = ()) -> None:
    """One flag per SearchConfig option of ``groups``; defaults stay None so a TOML file can
    set them. A command only offers the options it uses: another is refused by the parser."""
    parser.add_argument("--config", help="TOML file of options (flags override it)")
    for f in fields(SearchConfig):
        if spec_of(f).group not in groups or f.name in skip:
            continue
        if f.type.startswith("bool"):  # bool, or bool | None (None: decided at run time)
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction,
                                default=None, help=_help(f.name))
        else:
            metavar = spec_of(f).metavar or f.name.split("_")[-1].upper()
            parser.add_argument(flag(f.name), default=None, metavar=metavar,
                                help=_help(f.name))
    parser.add_argument("--n-jobs", type=_at_least(1), default=1,
                        help="parallel trials in this process")


def _add_study_options(parser: argparse.ArgumentParser, default_name: str | None = None) -> None:
    parser.add_argument("--storage", metavar="URL", help=_help("storage"))
    parser.add_argument("--study-name", default=default_name,
                        help=_help("study_name", with_default=False))


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    group.add_argument("-v", "--verbose", action="store_true", help="epochs and Optuna's log")


def _config_from_args(args: argparse.Namespace, stored: dict | None = None) -> SearchConfig:
    """Defaults, then a stored study's configuration (resuming needs no option but the
    study's name and storage), then the TOML file, then the flags."""
    toml = load_toml(args.config) if args.config else {}
    flags = _flags(args)
    flags["storage"] = flags["storage"] or from_environment()
    config = make_config({**(stored or {}), **toml}, flags)
    if hasattr(args, "sampler"):  # compare runs every sampler it is given
        refuse_unused({**toml, **{k: v for k, v in flags.items() if v is not None}}, config)
    return config


def _flags(args: argparse.Namespace) -> dict:
    """Each SearchConfig option as given on the command line (None: not given)."""
    return {f.name: getattr(args, f.name, None) for f in fields(SearchConfig)}


def _existing_study(args: argparse.Namespace) -> optuna.Study | None:
    return existing_study(args.study_name, _storage_url(args)) if args.study_name else None


def _storage_url(args: argparse.Namespace) -> str:
    return storage_url(args.study_name, getattr(args, "storage", None))


def _load_study(args: argparse.Namespace) -> optuna.Study:
    return load_study(_storage_url(args), args.study_name)


def _load_searched_study(args: argparse.Namespace) -> optuna.Study:
    return load_searched_study(_storage_url(args), args.study_name, args.command)


# -- commands ------------------------------------------------------------------------------

def cmd_search(args: argparse.Namespace) -> int:
    """Create the study, or continue it when it exists: the same command resumes."""
    from biotune_optuna.app.jobs import search

    config = _config_from_args(args, stored_options(_existing_study(args)))
    study = search(config, n_jobs=args.n_jobs, quiet=args.quiet, verbose=args.verbose)
    if not contents.ranked_plans(study):  # the search ran, and every trial failed
        from biotune_optuna.app.export import no_plan

        print(f"biotune-optuna: error: {no_plan(study)}", file=sys.stderr)
        return 1
    _print_best(study)
    return 0


def _print_best(study: optuna.Study) -> None:
    from biotune_optuna.app.export import best, front_table

    if len(study.directions) > 1:
        print(front_table(study))
        return
    ranked = best(study)
    trial = ranked.trial
    penalty = contents.config(study).get("trainable_penalty") or 0.0
    label = ("validation value" if not penalty else
             f"penalised value (validation - {penalty:g} x trainable fraction)")
    print(f"best plan: trial {trial.number}, {label} {contents.describe_value(ranked)}")
    plan = contents.plan_of(study, trial)
    print(f"  trained blocks: {', '.join(plan.trained_blocks) or '-'}")
    print("  lr multipliers: " + ", ".join(f"{b} {m:.3g}x" for b, m in zip(
        plan.block_names, plan.multipliers) if m > 0))
    fraction = contents.trainable_fraction(trial)
    if fraction is not None:
        print(f"  trainable parameters: {100 * fraction:.2f} %")


def cmd_status(args: argparse.Namespace) -> int:
    """Trials by state, generation, best so far, elapsed and estimated remaining time."""
    from biotune_optuna.app.reports import status_report

    print(status_report(_load_study(args)))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """Print the best plan as JSON (a study of several objectives: its front as a table)."""
    from biotune_optuna.app.export import best_plan, front_table

    study = _load_searched_study(args)
    if len(study.directions) > 1 and args.max_cost is None:
        print(front_table(study))
    else:
        print(json.dumps(best_plan(study, args.max_cost), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export the best plan as JSON or as a plain PyTorch snippet with its param groups."""
    from biotune_optuna.app.export import best_plan, torch_snippet

    plan = best_plan(_load_searched_study(args), args.max_cost)
    text = json.dumps(plan, indent=2) + "\n" if args.format == "json" else torch_snippet(plan)
    if args.out:
        write_whole(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def cmd_train_best(args: argparse.Namespace) -> int:
    """Retrain the best plan on the training split, test it, save the checkpoint."""
    from biotune_optuna.app.jobs import train_best

    study = _load_study(args)
    seeds = _seeds(args.seeds)
    print(train_best(study, seeds, args.out, device=args.device, data_root=args.data_root,
                     compare=args.compare, quiet=args.quiet, top_k=args.top_k,
                     storage_url=_storage_url(args), threads=args.threads,
                     max_cost=args.max_cost))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard on the study's storage."""
    from biotune_optuna.app.dashboard import serve

    serve(_storage_url(args), args.host, args.port)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Write the analysis plots as PNG files and attach them to the study in
    optuna-dashboard, with a note (configuration, best plan, how to reproduce)."""
    from biotune_optuna.app.plots import plot_study

    study = _load_searched_study(args)
    others = [_load_study(argparse.Namespace(**{**vars(args), "study_name": name}))
              for name in str(args.compare or "").replace(",", " ").split() if name]
    refuse_other_tasks([study, *others])
    paths = plot_study(study, others, args.out,
                       publish_to=_storage_url(args) if args.dashboard else None)
    for path in paths:
        print(path)
    return 0


def _seeds(text: str) -> list[int]:
    """--seeds: distinct integers (a seed given twice would count one run twice)."""
    try:
        seeds = [int(s) for s in str(text).replace(",", " ").split()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds takes integers such as 0,1,2, got {text!r}")
    _refuse_repeats("--seeds", seeds)
    return seeds


def _names(text: str, option: str, known) -> list[str]:
    """A comma-separated list of known names, each given once."""
    names = [n for n in text.replace(",", " ").split() if n]
    unknown = [n for n in names if n not in known] or ([] if names else [""])
    if unknown:
        raise ConfigError(f"{option} has unknown name {unknown[0]!r}; use "
                          f"{', '.join(known)} (comma-separated)")
    _refuse_repeats(option, names)
    return names


def _refuse_repeats(option: str, values: list) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
    if repeated:
        raise ConfigError(f"{option} lists {repeated[0]} twice; give each once")


def _at_least(low: float, kind: type = int):
    """An argparse type: a number of ``kind`` no smaller than ``low``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value < math.inf:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun} of at least {low:g}, got {text!r}")
        return value
    parse.__name__ = f"{kind.__name__} >= {low:g}"
    return parse


def _port(text: str) -> int:
    value = _at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port between 1 and 65535, got {text!r}")
    return value


def _output_file(text: str) -> str:
    """An argparse type: a file path whose folder exists (the file itself is written later)."""
    folder = Path(text).expanduser().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist; create it or write "
                                         "elsewhere")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {folder} is not writable; write elsewhere")
    return text


def _learning_rates(text: str) -> list[float]:
    """An argparse type: comma-separated positive learning rates."""
    try:
        values = [float(s) for s in text.replace(",", " ").split()]
    except ValueError:
        values = []
    if not values or not all(0 < v < math.inf for v in values):
        raise argparse.ArgumentTypeError(f"expected positive learning rates such as "
                                         f"1e-4,1e-3, got {text!r}")
    return values


def cmd_baseline(args: argparse.Namespace) -> int:
    """Fine-tuning baselines (full, linear, l2sp, l1sp, autorgn, lora) on the same task,
    training loop, splits and seeds as a search; test accuracy side by side."""
    from biotune_optuna.app.jobs import REVALIDATION_SEEDS, run_baselines
    from biotune_optuna.finetuning.evaluation import results_table

    config = _baseline_config(args)
    methods = _names(args.method, "--method", BASELINES)
    seeds = _seeds(args.seeds)
    if args.tune_lr and set(seeds) & set(REVALIDATION_SEEDS):
        raise ConfigError(f"--tune-lr picks the rate with seeds {list(REVALIDATION_SEEDS)}; "
                          "test with other --seeds")
    evaluations = run_baselines(config, methods, seeds, args.alpha, args.beta, args.rank,
                                quiet=args.quiet, lr_grid=args.tune_lr)
    print(results_table(evaluations))
    if args.out:
        write_whole(args.out, json.dumps([e.as_dict() for e in evaluations], indent=2))
    return 0


def _baseline_config(args: argparse.Namespace) -> SearchConfig:
    """A named study's task, splits and training protocol (so its baselines compare like
    with like), else the options given."""
    if not args.study_name:
        return _config_from_args(args)
    return config_for_baseline(_load_study(args), _flags(args), args.config)


def cmd_compare(args: argparse.Namespace) -> int:
    """BioTune against other samplers on the same objective and genome: one study per
    sampler and seed in one storage, equal budgets, a table and a convergence plot."""
    from biotune_optuna.app.comparison import compare_samplers

    config = _config_from_args(args)
    variants = _names(args.variants, "--variants", VARIANTS) if args.variants else []
    default = FRONT_SAMPLERS if config.cost_objectives else DEFAULT_SAMPLERS
    samplers = _names(args.samplers or ("biotune" if variants else default),
                      "--samplers", SAMPLERS)
    print(compare_samplers(config, samplers, _seeds(args.seeds), args.target, args.out,
                           quiet=args.quiet, variants=variants))
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    """List the studies in a storage."""
    from biotune_optuna.app.reports import studies_listing

    print(studies_listing(open_storage(_storage_url(args), heartbeat=None, create=False)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Search a plan for EfficientNet-Lite0 (ImageNet weights) on emoji categories with 10
    labels per class, and compare its test accuracy with full fine-tuning and linear
    probing."""
    from biotune_optuna.app.demo import demo

    print(demo(quick=args.quick, storage=args.storage or from_environment(), quiet=args.quiet,
               verbose=args.verbose))
    return 0


RESUMES = "interrupted; the study is consistent, run the same command again to resume"
INTERRUPTED = {"search": RESUMES, "compare": RESUMES, "demo": RESUMES,
               "dashboard": "dashboard stopped",
               "plot": "interrupted; the plots written so far are whole, the rest are not "
                       "drawn: run the command again to write them all",
               None: "interrupted; nothing was saved, run the command again to start over"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) that point at the command's help, and no
    abbreviated flags (``--sampler`` must not silently mean ``--samplers``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _summary(doc: str) -> str:
    """A docstring's first sentence, on one line."""
    text = " ".join(doc.split())
    return text.split(". ")[0].rstrip(".")


def _add_max_cost(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-cost", type=_at_least(0, float), default=None, metavar="COST",
                        help="a study of several objectives: the most accurate plan whose "
                        "first cost (as --objectives named it) is at most this")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="biotune-optuna", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, **kwargs) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=_summary(handler.__doc__),
                                  description=handler.__doc__, epilog=_examples(name),
                                  formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        sub.set_defaults(handler=handler)
        return sub

    search = command("search", cmd_search)
    _add_search_options(search)
    _add_output_options(search)
    for name, handler in (("status", cmd_status), ("studies", cmd_studies)):
        _add_study_options(command(name, handler))
    best = command("best", cmd_best)
    _add_study_options(best)
    _add_max_cost(best)
    export = command("export", cmd_export)
    _add_study_options(export)
    _add_max_cost(export)
    export.add_argument("--format", choices=("json", "python"), default="json",
                        help="json: the plan and its learning rates; python: a PyTorch snippet "
                        "that applies it (default: json)")
    export.add_argument("--out", type=_output_file, help="write to this file instead of stdout")
    train = command("train-best", cmd_train_best)
    _add_study_options(train)
    train.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds, e.g. 0,1,2")
    train.add_argument("--out", type=_output_file, default=None, help="checkpoint path (default: "
                       "<study>-best.pt beside the study's SQLite or journal file, else in "
                       "./studies/)")
    train.add_argument("--top-k", type=_at_least(1), default=5, help="re-validate this many of the "
                       "best trials with --seeds and keep the best (1: the best trial alone; "
                       "default: 5)")
    _add_max_cost(train)
    train.add_argument("--device", default="auto", help=_help("device"))
    train.add_argument("--data-root", default=None, metavar="DIR", help=_help("data_root"))
    train.add_argument("--threads", type=_at_least(1), default=None, metavar="N",
                       help="torch threads (default: torch's own, every core)")
    train.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                       help="also run full fine-tuning and linear probing on the same seeds "
                       "(default: on)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    plot = command("plot", cmd_plot)
    _add_study_options(plot)
    plot.add_argument("--out", default="plots", help="directory for the PNG files")
    plot.add_argument("--compare", default=None, help="other studies of the storage to "
                      "overlay on the convergence plot, grouped by sampler (comma-separated)")
    plot.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                      help="attach the plots and a note to the study for optuna-dashboard")
    base = command("baseline", cmd_baseline)
    _add_search_options(base, TRAINING_GROUPS)
    base.add_argument("--method", default="full,linear",
                      help="full, linear, l2sp, l1sp, autorgn, lora (comma-separated)")
    base.add_argument("--seeds", default="0,1,2,3,4", help="fine-tuning seeds")
    base.add_argument("--alpha", type=_at_least(0, float), default=0.01,
                      help="L2-SP/L1-SP backbone weight")
    base.add_argument("--beta", type=_at_least(0, float), default=0.01,
                      help="L2-SP/L1-SP head weight")
    base.add_argument("--rank", type=_at_least(1), default=4, help="LoRA rank")
    base.add_argument("--tune-lr", nargs="?", type=_learning_rates, const=list(LR_GRID),
                      default=None, metavar="GRID",
                      help="pick each method's base lr from GRID (default "
                      f"{','.join(f'{r:g}' for r in LR_GRID)}) by validation over seeds "
                      "100-102, then test with --seeds")
    base.add_argument("--out", type=_output_file, default=None,
                      help="also write the results as JSON")
    base.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    comparison = command("compare", cmd_compare)
    _add_search_options(comparison, skip=("sampler", "seed"))
    comparison.add_argument("--samplers", default=None,
                            help=f"samplers to compare, comma-separated: {', '.join(SAMPLERS)} "
                            f"(default: {DEFAULT_SAMPLERS}; with --objectives: {FRONT_SAMPLERS}; "
                            "biotune with --variants)")
    comparison.add_argument("--variants", default=None,
                            help="BioTune variants to compare instead (the paper's ablations), "
                            f"comma-separated: {', '.join(VARIANTS)}; the genome variants "
                            "(full, freeze-only, lr-only) also apply to other samplers")
    comparison.add_argument("--seeds", default="0,1,2,3,4",
                            help="sampler seeds, a list such as 0,1,2,3,4: one study per "
                            "sampler and seed")
    comparison.add_argument("--target", type=float, default=None, help="value whose "
                            "first-reaching trial is reported (default: the lowest best)")
    comparison.add_argument("--out", default="plots", help="directory of the plot")
    _add_output_options(comparison)
    dashboard = command("dashboard", cmd_dashboard)
    _add_study_options(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on "
                           "(default: 127.0.0.1, this machine only; the dashboard has no "
                           "authentication)")
    dashboard.add_argument("--port", type=_port, default=8080, help="port (default: 8080)")
    demo = command("demo", cmd_demo)
    demo.add_argument("--quick", action="store_true", help="a smaller search (38 trials)")
    demo.add_argument("--storage", default=None, help="default: $" + ENV_VAR +
                      " when set, else sqlite:///studies/demo.db")
    _add_output_options(demo)
    return parser


class _ScrubbingFormatter(logging.Formatter):
    """Log lines without the secrets of the storage URLs this process opened."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self._inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return scrubbed(self._inner.format(record))


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_ScrubbingFormatter(handler.formatter))
    logger.setLevel(logging.INFO)
    # Optuna logs through the same handler, so its messages are scrubbed too; its own
    # warnings repeat, with a traceback, what the progress output already says.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.ERROR)
    # Pre-emption ends like Ctrl-C (a search handles both itself, see study.StopRequests).
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    url = getattr(args, "storage", None) or from_environment()
    try:
        return args.handler(args)
    except USER_ERRORS as error:
        print(f"biotune-optuna: error: {scrubbed(str(error), url)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nbiotune-optuna: {INTERRUPTED.get(args.command, INTERRUPTED[None])}",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`best | head`): nothing left to say
        try:  # Python flushes stdout again on exit: let that write go nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no file (captured)
            pass
        return 0
    except Exception as error:  # a failure while running
        problem = describe_failure(error, url or _default_storage(args))
        if problem:
            print(f"biotune-optuna: error: {scrubbed(problem, url)}", file=sys.stderr)
        else:  # a bug: the traceback, without the storage's secrets
            print(scrubbed(traceback.format_exc(), url), end="", file=sys.stderr)
        return 1


def _default_storage(args: argparse.Namespace) -> str | None:
    try:
        return _storage_url(args)
    except ConfigError:
        return None




if __name__ == "__main__":
    sys.exit(main())
