"""The README's command-line and SQL examples, run as written against a demo database.

Blocks are marked in the README with ``<!-- readme-test: NAME -->`` on the line before them, so other
sections can grow freely; every block of the "Operating from the command line" section must carry a mark
(a new example there either runs here or says why not).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from tables.engine import make_engine
from tables.models import DLOG, SUBS

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Operating from the command line"
MARKED = re.compile(r"<!-- readme-test: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.S)
BIN = Path(sys.executable).parent


def blocks() -> dict[str, str]:
    return {name: body for name, _lang, body in MARKED.findall(README.read_text(encoding="utf-8"))}


def test_every_example_of_the_cli_section_is_marked():
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    fences = re.findall(r"(.*)\n```(?:bash|sql|sh)\n", section)
    assert fences and all(line.startswith("<!-- readme-test:") for line in fences), fences
    assert {"commands", "sqlite", "psql"} <= set(blocks())


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSH_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path)
    return env


def _one_token_and_delivery(url: str) -> tuple[str, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            token = c.execute(sa.select(SUBS.c.token).where(SUBS.c.app == "com.example.news").limit(1)).scalar_one()
            delivery = c.execute(sa.select(DLOG.c.delivery_id).limit(1)).scalar_one()
    finally:
        engine.dispose()
    return token, delivery


def _bind(sql: str, token: str, delivery: str) -> str:
    assert "<token>" in sql and "<delivery id>" in sql
    return sql.replace("<token>", token).replace("<delivery id>", delivery)


def test_readme_commands_and_sqlite_queries_run_as_written(tmp_path):
    script = "set -euo pipefail\n" + blocks()["commands"]
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    assert "error:" not in r.stderr, r.stderr
    assert not (tmp_path / "push-feedback.db").exists()  # nothing read or wrote the default database
    db = tmp_path / "push-feedback-demo.db"
    token, delivery = _one_token_and_delivery(f"sqlite:///{db}")
    assert shutil.which("sqlite3"), "the README's SQLite example needs the sqlite3 shell"
    r = subprocess.run(["sqlite3", "-bail", str(db)], input=_bind(blocks()["sqlite"], token, delivery),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("0|") and any(line.startswith("sent|") for line in lines), r.stdout
    assert any(line.startswith("analysis|") for line in lines), r.stdout


def test_readme_psql_queries_run_as_written(tmp_path, pg_engine, _pg_session_url):
    env = _env(tmp_path)
    r = subprocess.run([str(BIN / "push-feedback"), "demo", "--count", "100", "--database-url", _pg_session_url],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    token, delivery = _one_token_and_delivery(_pg_session_url)
    assert shutil.which("psql"), "the README's psql example needs psql"
    libpq = sa.engine.make_url(_pg_session_url).set(drivername="postgresql").render_as_string(hide_password=False)
    r = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-A", "-t", libpq],
                       input=_bind(blocks()["psql"], token, delivery), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("f|") and any(line.startswith("sent|") for line in lines), r.stdout


def test_readme_pytest_example_runs_outside_this_repository(tmp_path):
    """The documented way to test against push.testing, as a user's own test file."""
    (tmp_path / "test_example.py").write_text(blocks()["pytest-example"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_example.py"],
                       cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
