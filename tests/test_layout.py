"""The package's shape: stages import only from earlier stages, no import cycles, short functions."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dsd"
# pipeline order: a module may import from its own stage and from earlier ones only
STAGES = {"dsd.version": 0, "dsd.errors": 0, "dsd.design": 1, "dsd.runfolder": 2, "dsd.training": 3, "dsd.importers": 3,
          "dsd.analysis": 4, "dsd.api": 5, "dsd.cli": 6, "dsd.__main__": 6, "dsd": 7}
MAX_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """The dsd modules a file imports, at the top or inside functions (`from dsd import x` names dsd.x
    when x is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dsd"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dsd":
            subs = {f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")}
            found |= subs or {node.module}
            if len(subs) < len(node.names):
                found.add(node.module)
    return found


def stage(name: str) -> int:
    """The rank of the longest prefix of name in STAGES (dsd.design.spec -> dsd.design)."""
    matches = [prefix for prefix in STAGES if name == prefix or name.startswith(prefix + ".")]
    return STAGES[max(matches, key=len)]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_stages_are_told_apart():
    assert (stage("dsd.design.spec"), stage("dsd.analysis"), stage("dsd.cli.training"), stage("dsd")) == (1, 4, 6, 7)


def test_no_stage_imports_from_a_later_one():
    late = [(m, i) for m, deps in graph().items() for i in deps if stage(i) > stage(m)]
    assert late == []


def test_there_is_no_import_cycle():
    edges = graph()
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for dep in sorted(edges.get(m, ())):
            visit(dep if dep in edges else dep.rsplit(".", 1)[0])
        path.pop()
        done.add(m)

    for m in sorted(edges):
        visit(m)


def body_lines(fn: ast.FunctionDef) -> int:
    """A function's length without its signature (typer option declarations are not code to read)."""
    return fn.end_lineno - fn.body[0].lineno + 1


def test_every_function_fits_on_a_screen():
    long = [f"{p.relative_to(PACKAGE.parent)}:{fn.name} ({body_lines(fn)} lines)"
            for p in sorted(PACKAGE.rglob("*.py")) for fn in ast.walk(ast.parse(p.read_text()))
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(fn) > MAX_LINES]
    assert long == []


def test_docstrings_cite_the_repositorys_docs_only():
    cited = [p.name for p in PACKAGE.rglob("*.py") if "PAPER.md" in p.read_text()]
    assert cited == []
    sections = (PACKAGE.parent / "docs" / "method.md").read_text()
    for p in PACKAGE.rglob("*.py"):
        for ref in set(__import__("re").findall(r"docs/method\.md sections? ([0-9]+(?:\.[0-9]+)?)", p.read_text())):
            assert f"## {ref}." in sections or f"### {ref} " in sections, (p.name, ref)


def test_the_public_api_is_importable_from_the_package_and_light():
    import subprocess
    import sys

    code = ("import sys, dsd, dsd.api; assert 'torch' not in sys.modules; "
            "import dsd.training.worker; assert 'torch' not in sys.modules and 'pandas' not in sys.modules; "
            "names = [n for n in dsd.api.__all__ if getattr(dsd, n) is not getattr(dsd.api, n)]; "
            "assert not names, names; assert 'torch' not in sys.modules; print(dsd.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
