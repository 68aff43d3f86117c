"""``python -m bench --profile CASE``: where one case spends its CPU.

With py-spy installed (``pip install py-spy``) the whole worker process is
sampled, the database thread included; otherwise cProfile covers the timed part
on the event-loop thread only.
"""

from __future__ import annotations

import collections
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from bench.env import BenchEnv
from bench.server import pinned
from bench.spec import RunSpec

TOP = 30


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def profile(spec: RunSpec, env: BenchEnv, workdir: Path, root: Path, core: int, console: Console) -> None:
    child_env = {**os.environ, "PYTHONPATH": str(root)}
    worker = [sys.executable, "-m", "bench.worker"]
    spy = _py_spy()
    if spy is not None:
        # Kept after the run (the work directory is not) for reading the stacks in full.
        out = Path(tempfile.gettempdir()) / f"push-feedback-py-spy-{spec.kind}-{spec.provider}-{spec.db or 'none'}.txt"
        cmd = pinned([spy, "record", "-r", "500", "-f", "raw", "-o", str(out), "--", *worker,
                      spec.to_json(), env.to_json()], core)
        subprocess.run(cmd, cwd=root, env=child_env, check=True, capture_output=True)
        print_collapsed(out, console)
        console.print(f"collapsed stacks: {out}")
        return
    out = workdir / "cprofile.out"
    spec = RunSpec(**{**spec.__dict__, "profile": str(out)})
    subprocess.run(pinned([*worker, spec.to_json(), env.to_json()], core), cwd=root, env=child_env, check=True,
                   capture_output=True)
    console.print("[bold]cProfile of the timed part (event-loop thread only; install py-spy for all threads)[/]")
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(TOP)


def print_collapsed(path: Path, console: Console) -> None:
    """Self and inclusive shares per frame from py-spy's raw (collapsed stack) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        console.print("py-spy recorded no samples")
        return
    console.print(f"[bold]py-spy: {total} samples of the whole worker process (setup and warm-up included)[/]")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        console.print(f"[bold]{title}[/]")
        for frame, n in counter.most_common(TOP if title == "self" else 2 * TOP):
            console.print(f"  {n / total:6.1%}  {frame[:150]}", highlight=False)
