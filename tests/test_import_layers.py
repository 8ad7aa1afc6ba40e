"""The allowed import direction between packages, read from the source (imports inside functions included).

Each package sits on a layer and imports only from layers below it (or from itself): foundation modules ->
the data stages (``datagen`` writes datasets, ``data`` turns records into tensors; neither imports the
other) -> ``models`` -> ``train`` and ``eval`` (neither imports the other) -> ``studies`` (the demo, the
replicate study) -> ``cli`` (every command) -> ``__main__``. The library (every package below ``studies``)
never imports the commands or the studies. The CLI's ``COMMANDS`` table names the modules it imports lazily;
those names count as imports here. No two modules import each other, directly or round a loop, even from
inside functions (a lazy import hides a cycle; it does not remove it). A backwards import fails here with the
line that made it.

Library imports sit at the top of their module: an import inside a library function is allowed only for a
third-party dependency that is optional or heavy, with its reason on a ``# lazy: ...`` comment line right above
it, or a reason as the import line's own comment (``import onnx  # optional dependency: ...``); never for a
spatialboost module.

Inside ``datagen`` (the largest package) the same holds between its parts: synthetic ``scenes`` at the bottom;
``real`` images (perception, lifting) and ``questions`` each on top of ``scenes`` alone, so neither imports the
other and the synthetic path never loads a perception backend; ``dataset`` I/O over ``scenes`` and
``questions``, never a particular source; and the two sample sources, which join a producer to the writer, at
the top.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spatialboost"

# lowest first; a package may import its own modules and any package on a lower layer
LAYERS: list[set[str]] = [
    {"errors", "constants", "noise", "image_transform", "rng"},  # no spatialboost imports at all
    {"io", "registry"},
    {"config", "dataset_format"},
    {"datagen", "data"},
    {"models"},
    {"train", "eval"},
    {"studies"},
    {"cli"},
    {"__main__"},
]
ROOT = ""  # ``import spatialboost`` (the package: version and the lazy public API)
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer} | {ROOT: 0}
LIBRARY = {pkg for pkg, layer in LAYER_OF.items() if layer < LAYER_OF["studies"]}
ABOVE_LIBRARY = ("studies", "cli")
TABLE = "COMMANDS"

# datagen's parts (sub-packages and top-level modules) and the other parts each may import
DATAGEN_PARTS: dict[str, set[str]] = {
    "": set(),  # datagen/__init__.py
    "scenes": set(),
    "real": {"scenes"},
    "questions": {"scenes"},
    "dataset": {"scenes", "questions"},
    "sources": {"scenes", "questions", "dataset"},
    "recipes": {"scenes", "questions", "dataset", "sources"},
    "image_source": {"scenes", "real", "questions", "dataset"},
}  # a module-level dict whose string values name the modules a command line imports lazily


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _nodes(text: str) -> tuple[ast.AST, ...]:
    """Every node of a module's source (cached by text: the tests below parse copies of the same files)."""
    return tuple(ast.walk(ast.parse(text)))


def imported_modules(path: Path, src: Path = SRC) -> list[tuple[str, int]]:
    """Every spatialboost module ``path`` imports, anywhere in the file, with its line number (the modules
    named in a ``COMMANDS`` table included)."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in _nodes(path.read_text(encoding="utf-8")):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from spatialboost.cli import common`` imports the module cli.common
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(src, f"{target}.{a.name}")]
            found += [(m, node.lineno) for m in subs or [target]]
        elif _is_table(node):
            found += [(c.value, c.lineno) for c in ast.walk(node.value) if _names_module(src, c)]
    return [(t, line) for t, line in found if t == "spatialboost" or t.startswith("spatialboost.")]


def _is_table(node: ast.AST) -> bool:
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == TABLE for t in node.targets)
    return isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == TABLE


def _names_module(src: Path, node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_module(src, node.value)


def _is_module(src: Path, dotted: str) -> bool:
    path = src.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def package_of(module: str) -> str:
    """``spatialboost.models.vlm`` -> ``models``; ``spatialboost.io`` -> ``io``; ``spatialboost`` -> ROOT."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def datagen_part(module: str) -> str:
    """``spatialboost.datagen.questions.relations`` -> ``questions``; ``spatialboost.datagen`` -> ``""``."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else ""


def violations(src: Path) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        source = module_name(path, src)
        pkg = package_of(source)
        for target, line in imported_modules(path, src):
            dst = package_of(target)
            where = f"{path.relative_to(src.parent)}:{line}: {source} imports {target}"
            if pkg == dst == "datagen":
                part, other = datagen_part(source), datagen_part(target)
                if part not in DATAGEN_PARTS or other not in DATAGEN_PARTS:
                    bad.append(
                        f"{where} (declare the datagen part in DATAGEN_PARTS in {Path(__file__).name})"
                    )
                elif other != part and other not in DATAGEN_PARTS[part]:
                    bad.append(
                        f"{where} (datagen part {part!r} may only import {sorted(DATAGEN_PARTS[part])})"
                    )
            elif pkg not in LAYER_OF or dst not in LAYER_OF:
                bad.append(f"{where} (declare the package on a layer in {Path(__file__).name})")
            elif pkg in LIBRARY and dst in ABOVE_LIBRARY:
                bad.append(f"{where} (library code must not import the commands or the studies)")
            elif dst != pkg and LAYER_OF[dst] >= LAYER_OF[pkg]:
                bad.append(f"{where} (layer {LAYER_OF[pkg]} may only import layers below it)")
    return bad


def test_every_package_is_on_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or p.is_dir()}
    packages -= {"__init__", "__pycache__", "resources"}
    assert packages <= set(LAYER_OF), f"put {sorted(packages - set(LAYER_OF))} on a layer"


def test_every_datagen_part_is_declared():
    parts = {
        p.stem if p.is_file() else p.name
        for p in (SRC / "datagen").iterdir()
        if p.suffix == ".py" or p.is_dir()
    }
    parts -= {"__init__", "__pycache__"}
    assert parts <= set(DATAGEN_PARTS), f"declare {sorted(parts - set(DATAGEN_PARTS))} in DATAGEN_PARTS"


def test_imports_follow_the_layers():
    bad = violations(SRC)
    assert not bad, "imports against the declared layering:\n" + "\n".join(bad)


def test_the_library_imports_no_command_and_no_study():
    """Only the studies, the CLI and ``__main__`` import the studies or the CLI."""
    importers = {
        module_name(p)
        for p in SRC.rglob("*.py")
        if {package_of(t) for t, _ in imported_modules(p)} & {*ABOVE_LIBRARY}
    }
    assert importers and {package_of(m) for m in importers} <= {"studies", "cli", "__main__"}, sorted(
        importers
    )


def test_the_command_table_counts_as_imports():
    """``cli.COMMANDS`` names every command module; the layering sees those lazy imports."""
    from spatialboost.cli import COMMANDS

    seen = {target for target, _ in imported_modules(SRC / "cli" / "__init__.py")}
    assert {module for module, _ in COMMANDS.values()} <= seen


def test_models_import_nothing_from_data():
    """The encoder owns its preprocessing (``image_transform``), token strings and errors live in their
    leaf modules: ``models`` needs nothing from the data stage."""
    uses = [(module_name(p), t) for p in (SRC / "models").rglob("*.py") for t, _ in imported_modules(p)]
    assert [u for u in uses if package_of(u[1]) == "data"] == []


def import_cycles(src: Path) -> list[list[str]]:
    """Groups of modules that import each other (strongly connected components of the import graph)."""
    graph = {module_name(p, src): {t for t, _ in imported_modules(p, src)} for p in src.rglob("*.py")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v] & graph.keys():
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    assert import_cycles(SRC) == []


def test_a_cycle_is_caught(tmp_path):
    copy = tmp_path / "spatialboost"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "models" / "encoder_base.py").open("a") as f:
        f.write("\n\ndef _later():\n    from spatialboost.models.encoders import create_encoder\n")
    assert any("spatialboost.models.encoder_base" in group for group in import_cycles(copy))


@pytest.mark.parametrize(
    ("module", "line", "why"),
    [
        ("data/extra.py", "def f():\n    from spatialboost.models.vlm import SpatialVLM\n", "layer"),
        ("eval/extra.py", "from spatialboost.train.config import TrainConfig\n", "layer"),
        ("errors_extra.py", "import spatialboost.io\n", "declare"),
        ("models/extra.py", "from spatialboost.cli import export\n", "library"),
        ("train/extra.py", "def f():\n    from spatialboost.studies.demo import run_demo\n", "library"),
        ("eval/extra.py", "import spatialboost.studies.replicate.report\n", "library"),
        ("studies/extra.py", "from spatialboost.cli.common import check_out_dir\n", "layer"),
        ("studies/extra.py", 'COMMANDS = {"view": ("spatialboost.cli.view", "a table")}\n', "layer"),
        ("cli/extra.py", "import spatialboost.__main__\n", "layer"),
        (
            "datagen/scenes/extra.py",
            "from spatialboost.datagen.real.perception import build_backend\n",
            "part",
        ),
        (
            "datagen/questions/extra.py",
            "def f():\n    from spatialboost.datagen.dataset import writer\n",
            "part",
        ),
        ("datagen/questions/extra.py", "from spatialboost.datagen.real.lifting import lift_view\n", "part"),
        (
            "datagen/real/extra.py",
            "from spatialboost.datagen.questions.relations import SceneGraph\n",
            "part",
        ),
        ("datagen/dataset/extra.py", "from spatialboost.datagen.real import rgbd\n", "part"),
        ("datagen/dataset/extra.py", "from spatialboost.datagen.sources import SyntheticSource\n", "part"),
        ("datagen/extra.py", "from spatialboost.datagen.scenes.scene import Scene\n", "declare"),
    ],
)
def test_a_backwards_import_is_caught(tmp_path, module, line, why):
    """The check itself: a copy of the package plus one import that goes the wrong way fails it."""
    copy = tmp_path / "spatialboost"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / module).write_text(line)
    bad = violations(copy)
    assert len(bad) == 1 and why in bad[0], bad


LAZY_REASON = "# lazy:"


def lazy_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, module, explained) of every import inside a function of ``path``; explained when its first line
    ends in a reason comment, or a ``# lazy: reason`` line sits above it (or above the import run it starts)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                module = child.names[0].name if isinstance(child, ast.Import) else (child.module or "")
                found.append((child.lineno, module if not getattr(child, "level", 0) else "." + module))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(text), False)
    out = []
    for line, module in found:
        above = line - 2
        while above >= 0 and lines[above].lstrip().startswith(("import ", "from ")):
            above -= 1  # a run of lazy imports shares the comment above its first one
        explained = _gives_a_reason(lines[line - 1]) or (
            above >= 0 and lines[above].strip().startswith(LAZY_REASON)
        )
        out.append((line, module, explained))
    return out


def _gives_a_reason(line: str) -> bool:
    """A trailing comment that says something (not only a tool directive such as ``# noqa: F401``)."""
    _, sep, comment = line.partition("#")
    words = comment.strip()
    return bool(sep and words) and not words.startswith(("noqa", "type:", "fmt:", "pragma"))


def unexplained_lazy_imports(src: Path) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        if package_of(module_name(path, src)) not in LIBRARY:
            continue
        for line, module, explained in lazy_imports(path):
            where = f"{path.relative_to(src.parent)}:{line}: import of {module} inside a function"
            if module.startswith((".", "spatialboost")):
                bad.append(f"{where} (import spatialboost modules at the top of the module)")
            elif not explained:
                bad.append(
                    f"{where} (move it to the top, or say why it is lazy: '{LAZY_REASON} <reason>' above it)"
                )
    return bad


def test_library_imports_sit_at_the_top():
    bad = unexplained_lazy_imports(SRC)
    assert not bad, "in-function imports in the library:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("body", "caught"),
    [
        ("def f():\n    from spatialboost.errors import UserError\n", True),
        ("def f():\n    # lazy: we like it\n    from spatialboost.errors import UserError\n", True),
        ("def f():\n    import json\n", True),
        ("def f():\n    # lazy: optional extra [x]\n    import x\n    from x import y\n", False),
        ("def f():\n    import x  # lazy: optional extra [x]\n", False),
        ("def f():\n    import x  # optional dependency: only the converter needs it\n", False),
        ("def f():\n    import x  # noqa: F401\n", True),
    ],
)
def test_an_unexplained_lazy_import_is_caught(tmp_path, body, caught):
    (tmp_path / "spatialboost" / "models").mkdir(parents=True)
    (tmp_path / "spatialboost" / "models" / "extra.py").write_text(body)
    assert bool(unexplained_lazy_imports(tmp_path / "spatialboost")) is caught


# Imports inside library functions (issue 27): kept only for a third-party package that is optional (onnx, h5py,
# Meta-World, VGGT, moderngl's GL context, tensorboard) or that takes seconds to load where it is not already
# loaded (transformers in the perception backends, imported by one function, ``perception.hf.transformers_module``).
LAZY_IMPORT_BUDGET = 10


def library_lazy_imports(src: Path) -> list[str]:
    """``path:line: module`` of every import statement inside a function of a library module."""
    return [
        f"{path.relative_to(src.parent)}:{line}: {module}"
        for path in sorted(src.rglob("*.py"))
        if package_of(module_name(path, src)) in LIBRARY
        for line, module, _ in lazy_imports(path)
    ]


def test_lazy_import_budget():
    found = library_lazy_imports(SRC)
    assert len(found) <= LAZY_IMPORT_BUDGET, (
        f"{len(found)} imports inside library functions (budget {LAZY_IMPORT_BUDGET}): import at the top of the "
        "module, or let one function own the lazy import of an optional or heavy package:\n"
        + "\n".join(found)
    )


def test_the_lazy_import_count_sees_every_function(tmp_path):
    """Methods, nested functions and each statement of a run count; module-level and class-level imports
    do not; only library packages are counted."""
    (tmp_path / "spatialboost" / "models").mkdir(parents=True)
    (tmp_path / "spatialboost" / "cli").mkdir()
    (tmp_path / "spatialboost" / "models" / "extra.py").write_text(
        "import json\n\n\nclass A:\n    import os\n\n    def f(self):\n        # lazy: optional\n"
        "        import x\n        from y import z\n\n\ndef g():\n    def h():\n        import w  # optional\n"
    )
    (tmp_path / "spatialboost" / "cli" / "extra.py").write_text("def f():\n    import x  # optional\n")
    found = library_lazy_imports(tmp_path / "spatialboost")
    assert [f.rsplit(": ", 1)[1] for f in found] == ["x", "y", "w"], found
    assert all(f.startswith("spatialboost/models/extra.py:") for f in found), found


# the synthetic path of ``spatialboost generate`` (and the perception package it loads for ``generate images``)
CHEAP_STARTUP = ("spatialboost.cli.generate", "spatialboost.datagen.real.perception")
HEAVY = ("transformers", "peft")  # seconds to import; only a model backend, a model or training needs them


def test_generate_does_not_import_transformers():
    """A fresh interpreter that imports the generate command loads neither transformers nor peft: the
    perception backends reach transformers only through ``transformers_module()`` when a model backend is built."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {CHEAP_STARTUP!r}: importlib.import_module(m)\n"
        f"print(json.dumps({{m: m in sys.modules for m in {CHEAP_STARTUP + HEAVY!r}}}))\n"
    )
    path = os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=path),
                         capture_output=True, text=True, check=True)  # fmt: skip
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(loaded[m] for m in CHEAP_STARTUP), loaded
    assert not any(loaded[m] for m in HEAVY), f"the generate command now imports {loaded}"
