"""The import rule of docs/ARCHITECTURE.md: a package imports only from the floors below it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# bottom to top; the same list as docs/ARCHITECTURE.md. encoding (stage one) sits just below the
# CLI, so that stages two and three cannot import it: the stages talk only through files.
FLOORS = ["core", "cache_tools", "data", "student", "evaluation", "encoding", "pipeline"]
# pipeline/ is the CLI alone: command modules and their shared plumbing, no stage's engine
PIPELINE_MODULES = {"cli.py", "options.py", "__init__.py", "__main__.py"}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(first-party package, line) of every import in ``path``: top-level ones, imports inside
    functions and ``if TYPE_CHECKING:`` blocks alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(name.split(".")[0], node.lineno) for name in names
                  if name.split(".")[0] in FLOORS}
    return found


def upward_imports() -> list[str]:
    arrows = []
    for floor, package in enumerate(FLOORS):
        for path in sorted((ROOT / package).rglob("*.py")):
            for imported, line in sorted(imported_packages(path)):
                if FLOORS.index(imported) > floor:
                    arrows.append(f"{path.relative_to(ROOT)}:{line} imports {imported} (up)")
    return arrows


def test_every_package_is_on_a_floor():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(FLOORS), "a new package needs its floor here and in docs/ARCHITECTURE.md"


def test_pipeline_holds_only_the_cli():
    engines = sorted(path.name for path in (ROOT / "pipeline").glob("*.py")
                     if path.name not in PIPELINE_MODULES and not path.name.endswith("_cmd.py"))
    subpackages = sorted(path.name for path in (ROOT / "pipeline").iterdir()
                         if path.is_dir() and path.name != "__pycache__")
    assert engines + subpackages == [], "a stage's engine belongs in its own package, not pipeline/"


def test_imports_point_down_only():
    assert upward_imports() == []


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    # the check itself must be able to fail
    fake = tmp_path / "core"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from pipeline.cli import main\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert upward_imports() == ["core/bad.py:2 imports pipeline (up)"]


def test_the_architecture_doc_lists_the_same_floors():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    positions = [doc.index(f"`{package}/`") for package in reversed(FLOORS)]
    assert positions == sorted(positions), "docs/ARCHITECTURE.md lists the floors top to bottom"


def test_the_shard_format_and_atomic_io_load_without_torch():
    code = ("import sys, cache_tools.reader, cache_tools.writer, cache_tools.verify, "
            "cache_tools.sharded_map, cache_tools.logit_cache, core.io, core.errors; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            check=True)
    assert result.stdout.strip() == "False"
