"""Each shared idea is defined once (issue 14): the pipeline steps, the stream state machine, SENSE expand/reduce,
the Toeplitz product, CLASSICAL, the output formats and the trajectory hash. A second definition anywhere in the
packages fails here, before copies can drift apart again."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for top in ("models", "service", "gadgets") for p in (ROOT / top).rglob("*.py"))

ONE_DEFINITION = {
    r"def plan_sample\(": "service/engine/plan.py",
    r"def (validate|prepare|run_batch|restore|classical)\(self": "service/engine/pipeline.py",
    r"class StreamCore\b": "service/stream.py",
    r"def header_for_readout\(": "service/stream.py",
    r"def sense_expand\(": "models/physics/kernels.py",
    r"def sense_reduce\(": "models/physics/kernels.py",
    r"def toeplitz_product\(": "models/physics/kernels.py",
    r"^CLASSICAL = ": "service/engine/choice.py",
    r"class OutputFormat\b": "service/outputs/formats.py",
    r"def trajectory_hash\(": "models/physics/nufft_cache.py",
    r"^(TASKS|PREPARATIONS) = ": "models/data/manifest_schema.py",
}


@pytest.mark.parametrize("pattern", sorted(ONE_DEFINITION))
def test_defined_once(pattern):
    where = {str(path.relative_to(ROOT)) for path in SOURCES
             for line in path.read_text().splitlines() if re.search(pattern, line.strip())}
    assert where == {ONE_DEFINITION[pattern]}, f"{pattern!r} is defined in {sorted(where)}"


def test_output_formats_are_not_listed_by_hand():
    """Every list of output format names comes from ``OutputFormat``."""
    literal = re.compile(r"""\(\s*["'](png|dicom)["'],\s*["'](png|dicom|nifti|ismrmrd)["']""")
    listed = [f"{path.relative_to(ROOT)}:{number}" for path in SOURCES
              for number, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    assert not listed, listed


def test_the_runtime_never_hashes_a_trajectory_itself():
    """The runtime uses the sample's memoised ``trajectory_key`` (hashed once per slice, tests/data/test_sample.py);
    only models/ hashes, where a caller gave no key."""
    callers = {str(path.relative_to(ROOT)) for path in SOURCES if "trajectory_hash(" in path.read_text()}
    assert callers and all(caller.startswith("models/") for caller in callers), callers
