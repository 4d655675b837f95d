"""docs/layout.md's code block names every module of trl_ext/ and every benchmark script, so it cannot drift from the
tree silently."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layout() -> str:
    page = (ROOT / "docs" / "layout.md").read_text()
    match = re.search(r"^```\n(.*?)\n```", page, re.S | re.M)
    assert match, "docs/layout.md has no code block"
    return match.group(1)


def test_every_trl_ext_module_is_in_the_layout():
    layout = _layout()
    package = ROOT / "trl_ext"
    missing = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py" or path.name.startswith("_"):
            continue
        if path.parent == package:
            named = f"{path.name}" in layout
        else:  # a subpackage's module: the subpackage and the module's file name
            named = f"{path.parent.name}/" in layout and (path.name in layout or path.stem in layout)
        if not named:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"docs/layout.md does not name {missing}; redraw it from the tree"


def test_every_benchmark_script_is_in_the_layout():
    layout = _layout()
    missing = [p.name for p in sorted((ROOT / "benchmarks").glob("*.py")) if p.stem not in layout]
    assert not missing, f"docs/layout.md does not name benchmarks/{missing}; redraw it from the tree"


def test_the_layout_names_no_module_that_is_gone():
    layout = _layout()
    named = set(re.findall(r"\b([a-z_]+)\.py\b", layout))
    exists = {p.stem for top in ("trl_ext", "benchmarks", "recipes") for p in (ROOT / top).rglob("*.py")}
    assert named <= exists, f"docs/layout.md names {sorted(named - exists)}, which no longer exist"
