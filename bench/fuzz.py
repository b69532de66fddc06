"""More fuzzing than the test suite runs: ``tests/service/test_fuzz.py`` (REST, ``mrdserve recon``, MRD, gadget)
with many more cases, from seeds the suite never uses, in a pytest subprocess.

Run: ``.venv/bin/python bench/fuzz.py [--cases 10000] [--seed 1000000]``. Prints each entry point's outcome and
time; last line ``cases_per_entry_point=<n> first_seed=<s> failed_entry_points=<k> seconds=<t>`` (target: 0 failed).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000, help="cases per entry point")
    parser.add_argument("--seed", type=int, default=1_000_000, help="first seed (the suite uses 0..999)")
    args = parser.parse_args()
    env = {**os.environ, "MRDSERVE_FUZZ_CASES": str(args.cases), "MRDSERVE_FUZZ_SEED": str(args.seed)}
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "tests/service/test_fuzz.py", "-rA", "-p",
                          "no:cacheprovider", "--durations=0"], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    outcomes = re.findall(r"^(PASSED|FAILED|ERROR) tests/service/test_fuzz.py::(\w+)", run.stdout, re.MULTILINE)
    durations = dict((name, float(t)) for t, name in re.findall(r"^([\d.]+)s call\s+\S+::(\w+)", run.stdout,
                                                                  re.MULTILINE))
    print(f"{'entry point test':70s} {'outcome':8s} {'seconds':>8s}")
    for outcome, name in outcomes:
        print(f"{name:70s} {outcome:8s} {durations.get(name, float('nan')):8.1f}")
    failed = sum(1 for outcome, _ in outcomes if outcome != "PASSED")
    if failed or not outcomes:
        print(run.stdout[-4000:])
    print(f"cases_per_entry_point={args.cases} first_seed={args.seed} failed_entry_points={failed if outcomes else 4} "
          f"seconds={seconds:.0f}")
    return 1 if failed or not outcomes else 0


if __name__ == "__main__":
    sys.exit(main())
