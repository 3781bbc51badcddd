"""The three one-way layers (docs: biotune_optuna/__init__.py): what each package may import,
no import cycle between modules, and the light entry points stay free of torch."""

import ast
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "biotune_optuna"
ALLOWED = {  # layer -> the project modules it may import (prefixes)
    "sampler": ("biotune_optuna.sampler",),
    "finetuning": ("biotune_optuna.finetuning", "biotune_optuna.sampler.plan"),
    "contents": ("biotune_optuna.contents", "biotune_optuna.sampler"),
    "analysis": ("biotune_optuna.analysis", "biotune_optuna.sampler", "biotune_optuna.contents"),
    "app": ("biotune_optuna.app", "biotune_optuna.finetuning", "biotune_optuna.sampler",
            "biotune_optuna.analysis", "biotune_optuna.contents"),
}
# the one module per layer that may use Optuna's private API
PRIVATE_API_DOORS = ("biotune_optuna/sampler/storage_io.py",
                     "biotune_optuna/app/optuna_internals.py")
# the modules that may read a study's or a trial's attrs: what the toolkit writes, what the
# sampler writes
ATTR_READERS = ("biotune_optuna/contents.py", "biotune_optuna/sampler/records.py")
HEAVY = ("torch", "torchvision", "matplotlib", "sklearn")


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, ast.parse(path.read_text())


def imported(tree, top_level_only=False):
    """The modules an AST imports (``from package import submodule`` names the submodule)."""
    known = {name for name, _ in modules()}
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            submodules = [f"{node.module}.{a.name}" for a in node.names
                          if f"{node.module}.{a.name}" in known]
            yield from submodules or [node.module]
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
@pytest.mark.slow
def test_each_layer_imports_only_what_it_may(layer):
    wrong = []
    for name, tree in modules():
        if not name.startswith(f"biotune_optuna.{layer}"):
            continue
        for target in imported(tree):
            if target.startswith("biotune_optuna") and not target.startswith(ALLOWED[layer]):
                wrong.append(f"{name} imports {target}")
            if layer != "finetuning" and target.split(".")[0] in HEAVY[:2]:
                wrong.append(f"{name} imports {target}")  # torch lives in finetuning/ only
    assert not wrong


@pytest.mark.slow
def test_no_import_cycle_between_modules():
    graph = {}
    names = {name for name, _ in modules()}
    for name, tree in modules():
        graph[name] = {t for t in imported(tree, top_level_only=True) if t in names} - {name}

    def visit(node, path):
        if node in path:
            return path[path.index(node):] + [node]
        for nxt in graph.get(node, ()):
            cycle = visit(nxt, path + [node])
            if cycle:
                return cycle
        return None

    # a package importing its own submodules (re-exports) is not a cycle
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles = [c for c in (visit(n, []) for n in graph) if c]
    assert not cycles, cycles[0]


@pytest.mark.parametrize("code", [
    "import biotune_optuna, biotune_optuna.sampler",
    "import biotune_optuna.cli as cli; cli.build_parser()",
    "import biotune_optuna.analysis._table",
])
def test_light_entry_points_do_not_import_torch(code):
    check = f"{code}; import sys; print(sorted(m for m in {HEAVY[:2]!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == "[]"


def test_the_training_engine_loads_neither_the_sampler_nor_optuna():
    """It takes a plan (``sampler/plan.py``, which imports nothing), not the sampler."""
    check = ("import biotune_optuna.finetuning.train, biotune_optuna.finetuning.baselines, "
             "biotune_optuna.finetuning.evaluation, sys; print(sorted(m for m in sys.modules "
             "if m == 'optuna' or m.startswith('biotune_optuna.sampler.')))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert out.strip() == "['biotune_optuna.sampler.plan']"


def test_the_package_root_gives_the_whole_public_api():
    import biotune_optuna

    for name in biotune_optuna.__all__:
        assert getattr(biotune_optuna, name).__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = biotune_optuna.nothing


def python_files():
    """The package's modules and the benchmarks (the rules hold there too)."""
    return sorted(str(p.relative_to(REPO)) for folder in (PACKAGE, REPO / "benchmarks")
                  for p in folder.rglob("*.py"))


PRIVATE_API = re.compile(r"\._storage\b|\._study_id\b|\._trial_id\b|optuna\.storages\._|"
                         r"\._backend\b|\._file_path\b|\._contains\(")
# reading a study's or trial's attrs, in any form: attribute, getattr, .items(), the doors'
# readers and the storage's
ATTR_READ = re.compile(r"\b(user_attrs|system_attrs)\b|\b(study_attrs|trial_attrs)\(|"
                       r"get_(study|trial)_(user|system)_attrs\(")
RAW_INDEXING = re.compile(r"(user|system)_attrs(\.get\(|\[)")


def private_api_users(files: dict[str, str]) -> list[str]:
    return sorted(f for f, text in files.items() if PRIVATE_API.search(text))


def attr_readers(files: dict[str, str]) -> list[str]:
    """Modules reading attrs outside the two contents modules and the sampler (which reads
    its own storage format, indexing it in records.py alone)."""
    return sorted(f for f, text in files.items()
                  if (ATTR_READ.search(text) and f not in ATTR_READERS
                      and not f.startswith("biotune_optuna/sampler/"))
                  or (RAW_INDEXING.search(text) and f not in ATTR_READERS))


def sources() -> dict[str, str]:
    return {f: (REPO / f).read_text() for f in python_files()}


def test_private_optuna_api_is_used_in_one_module_per_layer():
    assert private_api_users(sources()) == sorted(PRIVATE_API_DOORS)
    for door in PRIVATE_API_DOORS:  # each use says why no public API serves
        lines = (REPO / door).read_text().splitlines()
        uses = [i for i, line in enumerate(lines) if PRIVATE_API.search(line)]
        assert all(any("#" in lines[j] or '"""' in lines[j] for j in range(i - 3, i + 1))
                   for i in uses), door


def test_only_the_contents_modules_read_attrs():
    assert attr_readers(sources()) == []


@pytest.mark.parametrize("planted", [
    "study.user_attrs.get('x')", "trial.system_attrs['k']", "getattr(study, 'user_attrs')",
    "for k, v in study.user_attrs.items(): pass", "attrs = trial.user_attrs",
    "study_attrs(study)", "trial_attrs(trial)", "storage.get_trial_system_attrs(1)"])
def test_the_attr_guard_catches_every_form_of_read(planted):
    for module in ("biotune_optuna/app/planted.py", "benchmarks/planted.py",
                   "biotune_optuna/analysis/planted.py"):
        assert attr_readers({module: planted}) == [module]
    assert attr_readers({"biotune_optuna/contents.py": planted}) == []


@pytest.mark.parametrize("planted", [
    "study._storage.get_all_studies()", "trial._trial_id", "space['x']._contains(0.5)",
    "from optuna.storages._rdb import models", "study._study_id"])
def test_the_private_api_guard_catches_every_form(planted):
    assert private_api_users({"benchmarks/planted.py": planted}) == ["benchmarks/planted.py"]


def test_the_sampler_example_runs_on_its_own():
    out = subprocess.run([sys.executable, str(PACKAGE / "sampler" / "example.py")],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.startswith("best 0.")
    assert "front: accuracy" in out  # the two-objective half
    readme = (PACKAGE / "sampler" / "README.md").read_text()
    assert "## Example" in readme and "BioTuneSampler(" in readme


def test_optunahub_loads_the_sampler_folder_with_nothing_outside_it(tmp_path):
    """A registry-style tree holding a copy of the folder alone, loaded through
    ``optunahub.load_local_module`` in a process where the toolkit cannot be imported."""
    pytest.importorskip("optunahub")
    package = tmp_path / "package" / "samplers" / "biotune"
    shutil.copytree(PACKAGE / "sampler", package, ignore=shutil.ignore_patterns("__pycache__"))
    for required in ("__init__.py", "README.md", "LICENSE", "example.py"):
        assert (package / required).is_file(), required
    assert (REPO / "LICENSE").read_text() == (package / "LICENSE").read_text()
    code = textwrap.dedent(f"""
        import sys
        sys.modules["biotune_optuna"] = None  # nothing outside the folder
        import optuna, optunahub
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        mod = optunahub.load_local_module("samplers/biotune",
                                          registry_root={str(tmp_path / "package")!r})
        task = mod.synthetic.TASKS["near-domain"]
        sampler = mod.BioTuneSampler(6, 2, seed=0, search_space=mod.search_space(task.blocks))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(task, n_trials=sampler.n_trials(3))
        print(len(study.trials), round(study.best_value, 3))
        runpy = __import__("runpy")
        runpy.run_path({str(package / "example.py")!r}, run_name="__main__")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    trials, best = result.stdout.splitlines()[0].split()
    assert int(trials) == 6 + 3 * 8 and 0.0 < float(best) <= 1.0
    assert result.stdout.splitlines()[1].startswith("best 0.")
    front = (package / "README.md").read_text().split("---")[1]
    for field in ("author:", "title:", "description:", "tags:", "optuna_versions:", "license:"):
        assert field in front, field


@pytest.mark.slow
def test_sampler_tests_need_no_torch():
    blocker = ("import sys, pytest; sys.modules.update(torch=None, torchvision=None); "
               "sys.exit(pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', "
               "'tests/sampler']))")
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "tests collected" in result.stdout


def test_benchmark_scripts_share_code_through_common_and_results_only():
    """A script imports what scripts share from benchmarks.common (and the RESULTS.md
    writer), never another script's internals."""
    shared = ("benchmarks.common", "benchmarks.results")
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "benchmarks":
                names = [f"benchmarks.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith("benchmarks.") or name in shared, (path.name, name)


def test_the_code_passes_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", "."],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:]
