"""The rules of docs/design.md that a machine can check: which part imports what, one table of formats, sizes."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "lightning_deploy"

# part -> the parts of the package it may import (besides itself); docs/design.md, "Layers"
ALLOWED = {
    "formats": set(),
    "errors": set(),
    "artifact": {"formats", "errors"},
    "runtime": {"artifact", "formats", "errors"},
    "verification": {"runtime", "artifact", "formats", "errors"},
    "exporting": {"verification", "runtime", "artifact", "formats", "errors"},
    "serving": {"verification", "runtime", "artifact", "formats", "errors"},
    "lightning": {"exporting", "tracking", "verification", "runtime", "artifact", "report", "formats", "errors"},
    "tracking": {"verification", "runtime", "artifact", "formats", "errors"},
    "report": {"artifact", "formats", "errors"},
    "cli": {"commands", "lightning", "serving", "verification", "runtime", "artifact", "report", "formats", "errors"},
    "commands": {"lightning", "serving", "verification", "runtime", "artifact", "report", "formats", "errors"},
    "_compat": set(),
    "__init__": {"_compat", "runtime", "verification", "exporting", "lightning", "errors"},
}
# never import torch or onnx, anywhere
TORCH_FREE = {"formats", "errors", "artifact", "verification", "report", "_compat"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Every module ``path`` imports, and whether at module level (not inside a function or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
            isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            lazy.update(id(inner) for inner in ast.walk(node) if inner is not node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) not in lazy) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module == "lightning_deploy" else []
            found += [(name, id(node) not in lazy) for name in names or [node.module]]
    return found


def test_each_part_imports_only_the_parts_below_it():
    broken = []
    for path in _modules():
        part = _part(path)
        for module, _ in _imports(path):
            if not module.startswith("lightning_deploy."):
                continue
            target = module.split(".")[1]
            if target != part and target not in ALLOWED[part]:
                broken.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not broken, "imports against docs/design.md's layers:\n" + "\n".join(broken)


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _package_edges(path: Path, known: set[str]) -> set[str]:
    """The package's modules ``path`` imports anywhere (module level, functions, ``TYPE_CHECKING``)."""
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in known:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            edges |= submodules or {node.module}
    return edges - {_module_name(path)}


def test_no_import_cycle_in_the_package_type_checking_and_lazy_imports_included():
    modules = {_module_name(p): p for p in _modules()}
    graph = {name: _package_edges(path, set(modules)) for name, path in modules.items()}
    cycles, state = [], dict.fromkeys(graph, 0)  # 0 unvisited, 1 on the path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state[target] == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif state[target] == 0:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if state[name] == 0:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_the_lightning_part_imports_lightning():
    found = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in _modules()
        if _part(path) != "lightning"
        for module, _ in _imports(path)
        if module.split(".")[0] in ("lightning", "pytorch_lightning")
    ]
    assert not found, found


def test_the_contract_and_the_runtime_import_torch_only_where_a_backend_opens_an_artifact():
    found = []
    for path in _modules():
        part, relative = _part(path), path.relative_to(PACKAGE)
        for module, top_level in _imports(path):
            heavy = module.split(".")[0] in ("torch", "onnx", "onnxruntime", "onnxscript")
            if heavy and (part in TORCH_FREE or (part == "runtime" and top_level and "backends" not in relative.parts)):
                found.append(f"{relative} imports {module}" + (" at module level" if top_level else ""))
    assert not found, found


def test_an_onnx_artifact_loads_and_runs_where_torch_cannot_be_imported(tmp_path):
    import torch

    from lightning_deploy import export

    export(torch.nn.Linear(4, 2), torch.randn(2, 4), tmp_path, "linear", formats=["onnx"])
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['lightning'] = None\n"  # any import of them fails
        "import numpy as np\n"
        "from lightning_deploy import load\n"
        f"model = load({str(tmp_path / 'linear.export.json')!r})\n"
        "print(model(np.ones((3, 4), np.float32)).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(3, 2)"


def test_no_format_is_told_apart_by_its_name_outside_its_declaration_and_its_runtime():
    """A rule of a format is a field of its declaration (docs/design.md): no code compares a format's name."""
    from lightning_deploy.formats import NAMES

    found = []
    for path in _modules():
        relative = path.relative_to(PACKAGE)
        if _part(path) not in ("exporting", "serving", "tracking", "runtime") or "backends" in relative.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            operands += [e for o in operands if isinstance(o, (ast.Tuple, ast.List, ast.Set)) for e in o.elts]
            named = [o.value for o in operands if isinstance(o, ast.Constant) and o.value in NAMES]
            found += [f"{relative}:{node.lineno} compares {name!r}" for name in named]
    assert not found, found


def test_the_manifests_io_is_read_by_attribute_outside_the_artifact_part():
    """``artifact/contract.py`` reads the manifest's ``inputs``/``outputs`` once; everything else reads attributes."""
    found = []
    for path in _modules():
        if _part(path) == "artifact":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key = node.slice if isinstance(node, ast.Subscript) else None
            if isinstance(key, ast.Constant) and key.value in ("inputs", "outputs", "schema"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} looks up [{key.value!r}]")
    assert not found, found


def test_every_export_option_is_a_parameter_of_export_and_of_model_export_with_the_same_default():
    """Options are passed whole (``ExportOptions.from_arguments``): a new field needs only these parameters."""
    import inspect

    from lightning_deploy import ModelExport, export
    from lightning_deploy.exporting.options import ExportOptions

    for call in (export, ModelExport):
        parameters = inspect.signature(call).parameters
        for field in dataclasses.fields(ExportOptions):
            if field.name == "owner":
                continue
            assert field.name in parameters, (call.__name__, field.name)
            default = parameters[field.name].default
            got = tuple(default) if isinstance(default, (list, tuple)) else default
            assert got == field.default, (call.__name__, field.name, got, field.default)


def test_design_md_lists_every_module_and_the_readme_every_part():
    design = (PACKAGE.parent / "docs" / "design.md").read_text(encoding="utf-8")
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    missing = []
    for path in _modules():
        if path.name == "__init__.py":
            continue
        name = f"`{path.stem}`" if path.parent.name == "backends" else f"`{path.name}`"
        missing += [str(path.relative_to(PACKAGE))] if name not in design else []
    assert not missing, f"docs/design.md's table misses {missing}"
    folders = {p.parent.relative_to(PACKAGE).parts[0] for p in _modules() if p.parent != PACKAGE}
    assert not [f for f in folders if f"  {f}/" not in readme], "README's layout misses a part"


def test_the_callbacks_formats_literal_lists_exactly_the_declared_formats():
    from lightning_deploy import ModelExport
    from lightning_deploy.formats import NAMES

    (sequence,) = typing.get_args(typing.get_type_hints(ModelExport.__init__)["formats"])
    assert typing.get_args(sequence) == NAMES


def test_every_table_of_formats_is_derived_from_the_declarations():
    from lightning_deploy.artifact.manifest import SUFFIXES
    from lightning_deploy.exporting.options import FORMATS, methods_for
    from lightning_deploy.formats import NAMES, by_name
    from lightning_deploy.runtime.backends import RUNTIME_MODULES, runtime_module

    assert FORMATS == NAMES and list(SUFFIXES) == list(NAMES) and list(RUNTIME_MODULES) == list(NAMES)
    for name in NAMES:
        declared = by_name(name)
        assert SUFFIXES[name] == declared.suffix and methods_for(name, "auto") == declared.methods
        backend = runtime_module(name)  # the declared backend module exists and keeps the Backend contract
        assert isinstance(backend.RUNTIME, str) and backend.ARRAYS in ("numpy", "torch"), name
        assert isinstance(backend.PACKAGE, str) and backend.PACKAGE, name
        assert isinstance(backend.MISSING_DEVICE_HINT, str) and backend.has_device("cpu") is not None, name
        assert callable(backend.open_runner), name
        assert (declared.derived_by is None) == (declared.derived_from is None), name


def test_no_module_is_a_grab_bag_and_the_top_level_stays_small():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > 350}
    assert not long, f"modules over 350 lines: {long}"
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top
    crowded = {str(f.relative_to(PACKAGE)): n for f in [PACKAGE, *PACKAGE.rglob("*/")]
               if f.name != "__pycache__" and (n := len(list(f.glob("*.py")))) > 15}  # fmt: skip
    assert not crowded, f"folders with more than 15 modules: {crowded}"


@pytest.mark.parametrize("old, new", [("lightning_deploy.serve", "ExportedModelAPI"),
                                      ("lightning_deploy.flat_files", "save_inputs"),
                                      ("lightning_deploy.lightning_cli", "LightningDeployCLI"),
                                      ("lightning_deploy.load", "ExportedModel"),
                                      ("lightning_deploy.schema", "Record")])  # fmt: skip
def test_the_documented_module_paths_of_release_0_1_still_import(old, new):
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "import lightning_deploy\n"
        f"try:\n    from {old} import {new}\nexcept DeprecationWarning as w:\n    print(w)\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        f"from {old} import {new}\n"
        "print(lightning_deploy.load.__name__, type(lightning_deploy.load).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    warning, function = result.stdout.splitlines()
    assert warning.startswith(f"{old} moved to lightning_deploy."), warning
    assert function == "load function", "the package's load() keeps its name when the old module path is imported"


def test_the_layers_picture_in_design_md_draws_only_allowed_imports_and_every_part():
    """Each arrow of the Mermaid picture is an import ALLOWED permits; every part is in the picture."""
    design = (PACKAGE.parent / "docs" / "design.md").read_text(encoding="utf-8")
    picture = design.split("## Layers")[1].split("```mermaid")[1].split("```")[0]
    arrows = re.findall(r"^\s*(\w+)(?:\[[^\]]*\])? --> (\w+)", picture, re.MULTILINE)
    assert len(arrows) >= 10, picture
    forbidden = [(src, dst) for src, dst in arrows if dst not in ALLOWED[src]]
    assert not forbidden, f"arrows the rules forbid: {forbidden}"
    drawn = {name for arrow in arrows for name in arrow}
    assert set(ALLOWED) - {"commands", "report", "_compat", "__init__"} <= drawn, set(ALLOWED) - drawn
