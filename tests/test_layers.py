"""The three one-way layers (docs: biotune_optuna/__init__.py): what each package may import,
no import cycle between modules, and the light entry points stay free of torch."""

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "biotune_optuna"
ALLOWED = {  # layer -> the project modules it may import (prefixes)
    "sampler": ("biotune_optuna.sampler",),
    "finetuning": ("biotune_optuna.finetuning", "biotune_optuna.sampler.genome"),
    "analysis": ("biotune_optuna.analysis", "biotune_optuna.sampler", "biotune_optuna.app.keys"),
    "app": ("biotune_optuna.app", "biotune_optuna.finetuning", "biotune_optuna.sampler",
            "biotune_optuna.analysis"),
}
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


def test_the_sampler_example_runs_on_its_own():
    out = subprocess.run([sys.executable, "-m", "biotune_optuna.sampler.example"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert out.startswith("best 0.")
    readme = (PACKAGE / "sampler" / "README.md").read_text()
    assert "## Example" in readme and "BioTuneSampler(" in readme


def test_sampler_tests_need_no_torch():
    blocker = ("import sys, pytest; sys.modules.update(torch=None, torchvision=None); "
               "sys.exit(pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', "
               "'tests/sampler']))")
    result = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "tests collected" in result.stdout


def test_the_code_passes_ruff():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", "."],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:]
