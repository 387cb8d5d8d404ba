"""The layout's rules, checked by parsing the source: imports point only downward, there is no import cycle, the
model code imports only itself, torch and transformers, no module outside `models/` maps or compares family names
(what a family is lives in its config and model classes), only `hub.py` writes model cards and talks to the Hub, and
no docstring or `--help` text quotes a measured figure."""

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_autoencoders"
# The layers, bottom first; a module may import from its own part and the layers strictly below it.
LAYERS = {"models": 0, "results": 0, "data": 1, "plots": 1, "evaluation": 2, "hub": 2, "diffusers_compat": 2,
          "training": 3, "studies": 4,
          "cli": 5}
FAMILY_NAMES = {"ae", "vae", "vqvae", "pixelcnn_prior"}
MODEL_TYPES = {f"hf_autoencoders_{name}" for name in FAMILY_NAMES}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    """(absolute module imported, line) for every import in the file, function-level ones included."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((target, node.lineno))
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]  # a submodule, maybe
    return found


def package_modules(package: Path) -> dict[str, Path]:
    return {module_name(path, package.parent): path for path in package.rglob("*.py")}


def part(module: str) -> str | None:
    """The part of the layout a module belongs to ("models", "training", ...); None for the package root."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def layer_violations(package: Path) -> list[str]:
    """Imports of a part at the same or a higher layer (or of a part in no layer)."""
    bad = []
    for name, path in package_modules(package).items():
        source = part(name)
        if source is None:
            continue  # the package root only imports lazily, by name
        if source not in LAYERS:
            bad.append(f"{name} is in no layer; add its part to LAYERS")
            continue
        parts = {part(module) for module in package_modules(package)}
        for target, line in imports(path, package.parent):
            destination = part(target) if target.startswith(package.name + ".") else None
            if destination not in parts - {None} or destination == source:  # not a module (__version__), or its own
                continue
            if LAYERS.get(destination, 99) >= LAYERS[source]:
                bad.append(f"{path.relative_to(package.parent)}:{line} ({source}) imports {target} ({destination})")
    return bad


def import_cycles(package: Path) -> list[str]:
    """Cycles in the graph of imports between the package's modules (a package's __init__ importing its own
    submodules is not counted as a cycle through them)."""
    modules = package_modules(package)
    edges = {name: {t for t, _ in imports(path, package.parent) if t in modules and t != name}
             for name, path in modules.items()}
    visiting, done, cycles = [], set(), []

    def visit(node):
        visiting.append(node)
        for nxt in sorted(edges[node]):
            if nxt in visiting:
                loop = visiting[visiting.index(nxt):] + [nxt]
                if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(loop, loop[1:])):
                    cycles.append(" -> ".join(loop))
            elif nxt not in done:
                visit(nxt)
        visiting.pop()
        done.add(node)

    for node in sorted(edges):
        if node not in done:
            visit(node)
    return cycles


def test_imports_point_only_downward():
    bad = layer_violations(PACKAGE)
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_there_is_no_import_cycle():
    cycles = import_cycles(PACKAGE)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("path", sorted((PACKAGE / "models").glob("*.py")), ids=lambda p: p.name)
def test_model_code_imports_only_itself_torch_and_transformers(path):
    """What travels with a checkpoint as remote code must load with plain transformers: sibling imports are
    `from .x import y`, everything else torch, transformers or the standard library. The image processor may also
    use numpy and PIL, which transformers' own image processors need."""
    allowed = {"torch", "transformers", "__future__"} | set(sys.stdlib_module_names)
    if path.name.startswith("image_processing_"):
        allowed |= {"numpy", "PIL"}
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level != 1 or not node.module:
                bad.append(f"line {node.lineno}: only `from .sibling import x` travels with remote code")
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) else [])
        bad += [f"line {node.lineno}: imports {n}" for n in names if n.split(".")[0] not in allowed]
    assert not bad, f"{path.name}:\n" + "\n".join(bad)


def family_tables(path: Path) -> list[str]:
    """Dicts keyed by two or more family names, comparisons against a family name, and model_type strings."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if len([k for k in keys if k in FAMILY_NAMES]) >= 2:
                found.append(f"line {node.lineno}: a table keyed by family names {keys}")
        elif isinstance(node, ast.Compare):
            constants = [c for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
            strings = {c.value for c in constants if isinstance(c.value, str)}
            for c in node.comparators:
                if isinstance(c, (ast.Tuple, ast.List, ast.Set)):
                    strings |= {e.value for e in c.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
            if strings & FAMILY_NAMES:
                found.append(f"line {node.lineno}: branches on the family name(s) {sorted(strings & FAMILY_NAMES)}")
        elif isinstance(node, ast.Constant) and node.value in MODEL_TYPES:
            found.append(f"line {node.lineno}: spells the model_type {node.value!r}")
    return found


def test_no_family_table_or_family_branch_outside_models():
    """The library and its examples find a family through the registry (`autoencoder_classes`) and ask the model
    what it can do. (A benchmark's runs may still name the families they compare, e.g. against pythae's classes.)"""
    files = [p for p in PACKAGE.rglob("*.py") if "models" not in p.relative_to(PACKAGE).parts]
    files += list((ROOT / "examples").glob("*.py")) + [ROOT / "benchmarks" / "_common.py"]
    bad = [f"{path.relative_to(ROOT)} {finding}" for path in files for finding in family_tables(path)]
    assert not bad, "family names mapped or compared outside models/:\n" + "\n".join(bad)


# What only hub.py may touch: huggingface_hub's card and upload API, transformers' private upload, a card file.
HUB_NAMES = {"ModelCard", "ModelCardData", "EvalResult", "HfApi", "upload_folder", "upload_file", "create_repo",
             "_upload_modified_files"}


def hub_uses(path: Path) -> list[str]:
    """Names of the card and upload API, and the card's file name, used in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                else None)
        if isinstance(node, ast.ImportFrom):
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names if a.name in HUB_NAMES]
        elif name in HUB_NAMES:
            found.append(f"line {node.lineno}: uses {name}")
        elif isinstance(node, ast.Constant) and node.value == "README.md":
            found.append(f"line {node.lineno}: names README.md")
    return found


def test_only_hub_writes_model_cards_and_pushes():
    """One writer of cards and one push: `hub.write_model_card` and `hub.push_to_hub`. No other module (a model's
    `push_to_hub` included: it is transformers' own) builds a card, writes README.md or uploads."""
    files = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "hub.py"]
    bad = [f"{path.relative_to(ROOT)} {finding}" for path in files for finding in hub_uses(path)]
    assert not bad, "cards or uploads outside hub.py:\n" + "\n".join(bad)


# Measured figures: decibels, speed-ups, percentages, sizes and durations, and dates (not inside a file name).
FIGURE = re.compile(r"\d\s?dB\b|\d\s?x (faster|slower)|\d-\d+(\.\d+)?x\b|\d\s?(%|percent\b)|\d\s?(MB|GB|ms)\b"
                    r"|(?<![-\w])(19|20)\d\d-\d\d-\d\d(?![-\w])")


def quoted_figures(path: Path) -> list[str]:
    """Figures quoted in the docstrings and `help` texts of a module."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            texts.append(ast.get_docstring(node, clean=False) or "")
        helps = [node.value] if isinstance(node, ast.keyword) and node.arg == "help" else []
        if isinstance(node, ast.Dict):
            helps += [v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and k.value == "help"]
        texts += [c.value for h in helps for c in ast.walk(h)
                  if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return [match.group(0) for text in texts for match in FIGURE.finditer(text)]


# The modules already free of figures (issue 28); the others join as their figures move to docs/ and benchmarks/.
# Figures in the package that are facts rather than measurements: a default (2 GB), sizes of datasets, a 90/10
# split, a confidence level, the date in the name of the Inception weights of the FID literature.
FACTS = {"data/__init__.py": ["2 GB", "7 MB", "0 MB"], "data/loading.py": ["0%", "0%"],
         "evaluation/features.py": ["2015-12-05"], "studies/verdicts.py": ["0%"]}
FIGURE_FREE_FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FIGURE_FREE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_figures_in_docstrings_or_help(path):
    """Figures go stale: they belong in docs/ and benchmarks/README.md, not in docstrings or `--help`."""
    facts = FACTS.get(str(path.relative_to(PACKAGE)), [])
    assert quoted_figures(path) == facts, f"{path.name} quotes {quoted_figures(path)}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """Each source check fails on code that breaks its rule."""
    table = tmp_path / "table.py"
    table.write_text('CLASSES = {"ae": 1, "vae": 2}\nif family == "vqvae":\n    pass\nT = "hf_autoencoders_vae"\n')
    assert len(family_tables(table)) == 3
    card = tmp_path / "card.py"
    card.write_text('from huggingface_hub import ModelCard\nPath("README.md").write_text("x")\n'
                    'def push(self):\n    self._upload_modified_files("d", "r")\n')
    assert len(hub_uses(card)) == 3
    figures = tmp_path / "figures.py"
    figures.write_text('"""3x faster (benchmarks, 2026-01-02)."""\n'
                       'def f():\n    """Reaches 23.5 dB, 8 percent faster, 47 MB."""\n'
                       'p.add_argument("--x", help="about 13-15x and 20%")\n'
                       'F = field(metadata={"help": "weights-2015-12-05-6726825d.pth, 3 x 3 kernels"})\n')
    assert quoted_figures(figures) == ["3x faster", "2026-01-02", "5 dB", "8 percent", "7 MB", "3-15x", "0%"]
    package = tmp_path / "pkg"
    for sub in ("models", "training"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "models" / "a.py").write_text("def f():\n    from ..training import run\n")  # upward
    (package / "training" / "run.py").write_text("from ..models import a\nfrom . import loop\n")
    (package / "training" / "loop.py").write_text("from .run import x\n")  # training.run <-> training.loop
    assert layer_violations(package) == ["pkg/models/a.py:2 (models) imports pkg.training (training)",
                                         "pkg/models/a.py:2 (models) imports pkg.training.run (training)"]
    cycles = import_cycles(package)
    assert "pkg.models.a -> pkg.training.run -> pkg.models.a" in cycles  # models.a <-> training.run
    assert any(set(c.split(" -> ")) == {"pkg.training.run", "pkg.training.loop"} for c in cycles)
