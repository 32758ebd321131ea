"""Shared test fixtures: the original implementation's reference files and a tiny configuration."""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The reference fixtures live in the shared folder beside the repository (see README); override with
# RGNET_FIXTURES_DIR.
ORIGINAL_FIXTURES_DIR = Path(
    os.environ.get("RGNET_FIXTURES_DIR", REPO_ROOT.parent / "shared" / "fixtures" / "original")
)


@pytest.fixture(scope="session")
def original_fixtures_dir() -> Path:
    """Folder of the original implementation's reference files; skips the test when it is absent."""
    if not (ORIGINAL_FIXTURES_DIR / "README.md").is_file():
        pytest.skip(
            f"original-implementation fixtures not found at {ORIGINAL_FIXTURES_DIR} "
            "(set RGNET_FIXTURES_DIR to the folder holding rgnet_tiny_mad.json etc.)"
        )
    return ORIGINAL_FIXTURES_DIR
