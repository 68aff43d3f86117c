"""One measured client in its own process: ``python -m bench.worker '<RunSpec>' '<BenchEnv>'``.

Prints ``@bench-start`` / ``@bench-stop`` around the timed part and one
``@bench-result {json}`` line at the end.
"""

from __future__ import annotations

import json
import logging
import resource
import sys

from bench import workload
from bench.env import BenchEnv
from bench.runners import RUNNERS, Meter
from bench.spec import RESULT_MARK, RunResult, RunSpec


def main(argv: list[str]) -> int:
    spec, env = RunSpec.from_json(argv[0]), BenchEnv.from_json(argv[1])
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aioapns").setLevel(logging.CRITICAL)  # it logs every non-200 at ERROR
    meter = Meter(spec.profile)
    outcomes = RUNNERS[spec.kind](spec, env, meter)
    result = RunResult(
        n=spec.n, wall_s=meter.wall, cpu_s=meter.cpu,
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        outcomes=outcomes, expected_failed=workload.dead_count(0, spec.n, spec.dead))
    print(RESULT_MARK + json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
