"""The layers, checked on the source: an import edge the layers forbid fails this test.

    apps           push.cli, push.demo, push.docs, push.testing      may import anything below
    orchestration  push.pipeline, push.registry, push.shards*, jobs  core, metrics, io
    io             providers: push.apns, push.fcm, push.transport*, push.tls, push.h2backend,
                   push.transport_errors, push.unwritten             core, metrics
                   tables: tables.*                                  core, metrics
    metrics        push.metrics, push.logs, push.health              core
    core           push (the package's own light names), outcomes, errors, outcome_table, classify,
                   quarantine, qualification, notification, config, clock, jsoncodec:
                   the standard library and orjson only

The two kinds of io never import each other (a provider client knows no table; a table knows no
provider). A module not listed here fails the test until it is given a layer.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("push", "tables", "jobs")

CORE = {"push", "push.outcomes", "push.errors", "push.outcome_table", "push.classify", "push.quarantine",
        "push.qualification", "push.notification", "push.config", "push.clock", "push.jsoncodec"}
METRICS = {"push.metrics", "push.logs", "push.health"}
PROVIDERS = {"push.apns", "push.fcm", "push.transport", "push.tls", "push.h2backend", "push.transport_errors",
             "push.unwritten"}
ORCHESTRATION = {"push.pipeline", "push.registry", "push.shards", "push.celery_app"}
APPS = {"push.cli", "push.demo", "push.docs", "push.testing"}
RANK = {"core": 0, "metrics": 1, "providers": 2, "tables": 2, "orchestration": 3, "apps": 4}
# Third-party packages core may use besides the standard library.
CORE_THIRD_PARTY = {"orjson"}


def layer(module: str) -> str | None:
    def under(names: set[str]) -> bool:
        return any(module == n or module.startswith(n + ".") for n in names)
    if module in CORE:
        return "core"
    if under(METRICS):
        return "metrics"
    if under(PROVIDERS):
        return "providers"
    if module == "tables" or module.startswith("tables."):
        return "tables"
    if under(ORCHESTRATION) or module == "jobs" or module.startswith("jobs."):
        return "orchestration"
    if under(APPS):
        return "apps"
    return None


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # Alembic's scripts: loaded by Alembic, part of tables
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """Every module of ours this file imports (at the top or inside a function), submodules resolved."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # annotations only: not an import at run time
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
    return out


def violations(found: dict[str, Path]) -> list[str]:
    known = set(found)
    bad = []
    for name, path in sorted(found.items()):
        mine = layer(name)
        if mine is None:
            bad.append(f"{name}: not given a layer")
            continue
        for target in sorted(imports(path, known)):
            top = target.split(".")[0]
            if top not in PACKAGES:
                if mine == "core" and top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY:
                    bad.append(f"{name} (core) imports {target}: core is the standard library and orjson only")
                continue
            theirs = layer(target)
            if theirs is None or theirs == mine:
                continue
            if {mine, theirs} == {"providers", "tables"}:
                bad.append(f"{name} ({mine}) imports {target} ({theirs}): the two kinds of io are independent")
            elif RANK[theirs] > RANK[mine]:
                bad.append(f"{name} ({mine}) imports {target} ({theirs}): a layer imports only those below it")
    return bad


def test_no_import_crosses_the_layers():
    assert violations(modules()) == []


def test_the_check_sees_a_forbidden_edge(tmp_path):
    """The test can fail: an orchestration import in tables, or a tables import in core, is reported."""
    found = modules()
    bad_tables = tmp_path / "bad_tables.py"
    bad_tables.write_text("from push.pipeline import send_batch\n")
    bad_core = tmp_path / "bad_core.py"
    bad_core.write_text("def f():\n    from tables import store\n    import sqlalchemy\n")
    found["tables.bad"], found["push.clock"] = bad_tables, bad_core
    found = dict(sorted(found.items()))
    reported = "\n".join(violations(found))
    assert "tables.bad (tables) imports push.pipeline (orchestration)" in reported
    assert "push.clock (core) imports tables.store (tables)" in reported
    assert "push.clock (core) imports sqlalchemy" in reported


def test_every_module_is_importable_on_its_own():
    for name in modules():
        assert importlib.util.find_spec(name) is not None, name
