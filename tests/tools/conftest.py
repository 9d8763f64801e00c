"""Put ``tools/`` and ``benchmarks/`` on the import path and locate the shared data sets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tools"))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

# The shared data sets live next to the repository, not in it, so the tests that
# read them are skipped on a fresh clone.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SHARED_SETS = ("nab-realKnownCause", "skab", "ton_iot")


@pytest.fixture
def shared_data() -> Path:
    """Return the shared data folder, or skip the test when a data set is missing."""
    missing = [name for name in SHARED_SETS if not (SHARED_DATA / name).is_dir()]
    if missing:
        pytest.skip(f"shared data not found in {SHARED_DATA}: {', '.join(missing)}")
    return SHARED_DATA
