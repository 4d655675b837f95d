"""The import graph of the two front-ends and the layer under them: ``trl_ext.commands`` and ``trl_ext.pipeline``
stand on ``trl_ext.assembly``; neither imports the other or ``trl_ext.cli`` (which sits on top of both), and
``trl_ext.assembly`` imports none of the three. Every import counts, at the top of a module or inside a function."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "trl_ext"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, at any depth of its code (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x` imports module x
    return found


def imports_of(subpackage: str) -> dict[str, set[str]]:
    folder = PACKAGE / subpackage
    paths = [folder.with_suffix(".py")] if folder.with_suffix(".py").exists() else sorted(folder.rglob("*.py"))
    return {module_name(p): imported_modules(p) for p in paths}


def reaches(names: set[str], target: str) -> set[str]:
    return {n for n in names if n == target or n.startswith(target + ".")}


def test_the_resolver_reads_relative_and_function_level_imports():
    """The checker itself: a relative import inside a function is found and resolved."""
    imports = imported_modules(PACKAGE / "cli.py")
    assert reaches(imports, "trl_ext.pipeline")  # cli.py imports the pipeline inside _pipeline() only
    assert reaches(imports, "trl_ext.commands")
    assert "trl_ext.assembly.frontend" in imported_modules(PACKAGE / "commands" / "__init__.py")  # inside run()


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        ("commands", ["trl_ext.pipeline", "trl_ext.cli"]),
        ("pipeline", ["trl_ext.commands", "trl_ext.cli"]),
        ("assembly", ["trl_ext.commands", "trl_ext.pipeline", "trl_ext.cli"]),
    ],
)
def test_a_layer_imports_nothing_above_or_beside_it(layer, forbidden):
    bad = {
        module: sorted(n for target in forbidden for n in reaches(names, target))
        for module, names in imports_of(layer).items()
    }
    bad = {module: names for module, names in bad.items() if names}
    assert not bad, f"trl_ext/{layer} imports what it must not: {bad}"


def test_commands_and_pipeline_import_together_in_a_fresh_interpreter():
    result = subprocess.run(
        [sys.executable, "-c", "import trl_ext.commands, trl_ext.pipeline, trl_ext.cli"],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": ""}, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
