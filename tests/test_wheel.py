"""The built wheel: installs no top-level ``fixtures`` package, ships ``push.testing``, and the demo runs from it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # From a clean copy: setuptools reuses a build/ directory, which may hold files no longer in the source.
    src = tmp_path_factory.mktemp("src") / "push-feedback"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "build", "dist", ".git", "__pycache__",
                                                             "*.egg-info", ".pytest_cache", "bench"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    [whl] = out.glob("push_feedback-*.whl")
    return whl


def test_wheel_holds_the_package_and_no_repository_test_support(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("push_feedback-")}
    assert tops == {"push", "tables", "jobs"}, tops
    assert "push/testing/server.py" in names and "tables/migrations/versions/0003_delivery_input_and_abandon.py" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = re.findall(r"^Requires-Dist: (.*)$", meta, re.M)
    assert [r for r in requires if r.startswith("trustme")] and all("extra ==" in r for r in requires
                                                                      if r.startswith("trustme"))


def test_wheel_in_a_fresh_venv_has_no_fixtures_package_and_runs_the_demo(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # The dependencies come from this environment (no network); the wheel itself is installed for real.
    site = sysconfig.get_paths()["purelib"]
    (Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  text=True).strip()) / "deps.pth").write_text(site + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("PUSH_")}
    # Run outside the repository, so nothing is imported from the working tree.
    probe = ("import importlib.util, push, tables; "
             "print(importlib.util.find_spec('fixtures') and importlib.util.find_spec('fixtures').origin); "
             "print(push.__file__)")
    out = subprocess.run([str(py), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    fixtures_origin, push_file = out.stdout.split()
    assert str(venv) in push_file, push_file  # the installed copy, not the repository
    assert fixtures_origin == "None" or str(venv) not in fixtures_origin, fixtures_origin
    installed = Path(push_file).parent.parent
    assert not (installed / "fixtures").exists()
    r = subprocess.run([str(venv / "bin" / "push-feedback"), "demo", "--count", "100", "--json"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '"sent"' in r.stdout and (tmp_path / "push-feedback-demo.db").exists()
