"""The test server stays apart from the product: it imports only the protocol package and its
own modules, the product imports it only in the CLI's `testserver` command, and what it needs
beyond the product's dependencies sits in the `testserver` extra."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rtds_pipeline"
TESTSERVER = PACKAGE / "testserver"


def imports(path: Path) -> list[tuple[str, ast.stmt, list[ast.AST]]]:
    """(module imported, the import node, its enclosing nodes) for every import in `path`."""
    found: list[tuple[str, ast.stmt, list[ast.AST]]] = []

    def visit(node: ast.AST, parents: list[ast.AST]) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, node, parents) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node, parents))
        for child in ast.iter_child_nodes(node):
            visit(child, [*parents, node])

    visit(ast.parse(path.read_text()), [])
    return found


def third_party(paths: list[Path]) -> set[str]:
    stdlib = sys.stdlib_module_names
    return {m.split(".")[0] for p in paths for m, _, _ in imports(p)
            if m.split(".")[0] not in stdlib and not m.startswith("rtds_pipeline")}


def distribution(requirement: str) -> str:
    """The distribution a pyproject.toml requirement names ("uvicorn[standard]==0.54.0": uvicorn)."""
    return requirement.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()


def product_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if TESTSERVER not in p.parents]


def test_testserver_imports_only_the_protocol_and_itself():
    wrong = [(p.name, m) for p in TESTSERVER.rglob("*.py") for m, _, _ in imports(p)
             if m.startswith("rtds_pipeline") and not m.startswith(
                 ("rtds_pipeline.protocol", "rtds_pipeline.testserver"))]
    assert wrong == []


def test_the_leaf_helpers_import_nothing_of_ours():
    """Helpers every stage may use sit at the bottom: a leaf imports no module of the package."""
    leaves = [PACKAGE / "warehouse" / "sqlscripts.py", PACKAGE / "warehouse" / "keys.py"]
    wrong = [(p.name, m) for p in leaves for m, _, _ in imports(p) if m.startswith("rtds_pipeline")]
    assert wrong == []


def test_the_product_imports_the_testserver_only_in_the_cli_testserver_command():
    def allowed(path: Path, parents: list[ast.AST]) -> bool:
        functions = [n.name for n in parents if isinstance(n, ast.FunctionDef)]
        type_checking = any(isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
                            for n in parents)
        return path.name == "cli.py" and (type_checking or functions[:1] in (
            ["_testserver"], ["_webhook_options"]))

    wrong = [(str(p.relative_to(ROOT)), node.lineno)
             for p in product_modules() for m, node, parents in imports(p)
             if m.startswith("rtds_pipeline.testserver") and not allowed(p, parents)]
    assert wrong == []
    # And at run time: the CLI, the Dagster definitions and `make run` load no test-server module.
    code = ("import sys, rtds_pipeline.cli, rtds_pipeline.definitions, rtds_pipeline.run;"
            "print(sorted(m for m in sys.modules if m.startswith('rtds_pipeline.testserver')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_testserver_dependencies_beyond_the_products_are_in_its_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {distribution(r) for r in project["dependencies"]}
    extra = {distribution(r) for r in project["optional-dependencies"]["testserver"]}
    dists = packages_distributions()
    only_testserver = (third_party(list(TESTSERVER.rglob("*.py")))
                       - third_party(product_modules()))
    needed = {d.lower() for m in only_testserver for d in dists.get(m, [m])}
    assert needed <= extra, f"the test server alone needs {sorted(needed - extra)}: " \
                            "list them in the `testserver` extra, not in the dependencies"
    assert not (needed & declared)
    # The server's imports all resolve to declared distributions (the product's or the extra).
    used = {d.lower() for m in third_party(list(TESTSERVER.rglob("*.py"))) for d in dists[m]}
    assert used <= declared | extra


def test_every_package_the_product_imports_is_declared():
    """A package that only arrives with another (sqlalchemy with dagster, anyio with starlette) is
    still declared: the day that other drops it, the import would fail on a fresh install. An
    import guarded by `except ImportError` (psutil, botocore) is optional."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {distribution(r) for r in project["dependencies"]}
    dists = packages_distributions()

    def optional(parents: list[ast.AST]) -> bool:  # inside `try: … except ImportError:`
        return any(isinstance(n, ast.Try) and any(
            h.type is not None and "ImportError" in ast.unparse(h.type) for h in n.handlers)
            for n in parents)

    modules = {m.split(".")[0] for p in product_modules() for m, _, parents in imports(p)
               if not optional(parents)} & third_party(product_modules())
    used = {m: {d.lower() for d in dists.get(m, [m])} for m in modules}
    undeclared = {m: sorted(d) for m, d in used.items() if not d & declared}
    assert undeclared == {}, f"imported but not in pyproject.toml's dependencies: {undeclared}"
