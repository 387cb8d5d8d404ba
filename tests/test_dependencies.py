"""Every third-party module the package and the examples import is declared in pyproject.toml: a fresh install with
the declared requirements runs every command of the README, and the next undeclared import fails here."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def normalized(distribution: str) -> str:
    """PEP 503: `Pillow`, `pillow` and `PILLOW` are one distribution, so are `huggingface_hub` and `huggingface-hub`."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def declared() -> tuple[set[str], set[str]]:
    """(the distributions pyproject.toml requires, those its extras add)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {normalized(re.match(r"[A-Za-z0-9_.-]+", requirement).group()) for requirement in requirements}

    extras = set().union(*(names(group) for group in project.get("optional-dependencies", {}).values()))
    return names(project["dependencies"]), extras


def third_party_imports(folder: Path) -> dict[str, dict[str, bool]]:
    """{top-level module: {file: imported when the file is imported (not only inside a function)}} of every import
    in `folder` that is neither the standard library, this package, nor a sibling script."""
    local = {path.stem for path in folder.glob("*.py")}
    found: dict[str, dict[str, bool]] = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text())
        at_import = {id(node) for statement in tree.body for node in ast.walk(statement)
                     if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top in ("hf_autoencoders", "__future__"):
                    continue
                name = str(path.relative_to(folder.parent))
                found.setdefault(top, {})[name] = found.get(top, {}).get(name, False) or id(node) in at_import
    return found


def distributions_of(module: str) -> set[str]:
    """The distributions that provide the top-level `module` (e.g. sklearn -> scikit-learn, PIL -> pillow); for a
    module that is not installed, the distribution of its own name."""
    return {normalized(d) for d in importlib.metadata.packages_distributions().get(module, [module])}


@pytest.mark.parametrize("folder", ["hf_autoencoders", "examples"])
def test_every_import_is_declared(folder):
    required, extras = declared()
    undeclared, optional_at_import = [], []
    for module, files in third_party_imports(ROOT / folder).items():
        providers = distributions_of(module)
        if not providers & (required | extras):
            undeclared.append(f"{module} ({', '.join(sorted(providers))}) in {', '.join(files)}")
        elif not providers & required and any(files.values()):
            optional_at_import.append(f"{module} in {', '.join(f for f, top in files.items() if top)}")
    assert not undeclared, f"imported but not declared in pyproject.toml's dependencies: {undeclared}"
    assert not optional_at_import, (f"an optional dependency imported at module level, so the package needs it: "
                                    f"{optional_at_import}; import it inside the function that uses it")


def test_the_check_sees_an_undeclared_import(tmp_path):
    (tmp_path / "module.py").write_text("import numpy\nimport tomllib\n\ndef f():\n    import yaml as y\n")
    name = f"{tmp_path.name}/module.py"
    assert third_party_imports(tmp_path) == {"numpy": {name: True}, "yaml": {name: False}}
    assert distributions_of("sklearn") == {"scikit-learn"} and distributions_of("PIL") == {"pillow"}
