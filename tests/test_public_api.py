"""The package's public surface: what ``push`` exports, and what importing its pure parts costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import push

ROOT = Path(__file__).resolve().parents[1]


def test_all_lists_exactly_what_is_exported():
    public = {name for name in dir(push) if not name.startswith("_")} - {"annotations", "import_module", "Any",
                                                                       "TYPE_CHECKING"}
    modules = {name for name in public if type(getattr(push, name)).__name__ == "module"}
    assert set(push.__all__) == public - modules
    for name in push.__all__:
        value = getattr(push, name)
        own = value.__dict__.get("__doc__") if isinstance(value, type) else type(value).__doc__ if name.isupper() \
            else value.__doc__
        assert own, f"push.{name} has no docstring"


def test_the_classifier_imports_without_database_or_network_libraries():
    code = ("import sys, push.classify, push.outcome_table, push.quarantine; "
            "print(sorted(m for m in ('sqlalchemy', 'httpx', 'alembic', 'psycopg', 'h2', 'jh2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_heavy_names_load_on_first_use():
    code = "import sys, push; assert 'sqlalchemy' not in sys.modules; push.send_batch; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
