"""Shared test fixtures: the original implementation's reference files and a tiny configuration."""

import os
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The reference fixtures live in the shared folder beside the repository (see README); override with
# RGNET_FIXTURES_DIR.
ORIGINAL_FIXTURES_DIR = Path(
    os.environ.get("RGNET_FIXTURES_DIR", REPO_ROOT.parent / "shared" / "fixtures" / "original")
)


# The fixtures' criterion keys (`spec_config.loss_*` in `<name>.json`) -> RGNetConfig field names.
FIXTURE_TO_CONFIG_FIELD = {
    "span_l1_weight": "span_l1_loss_weight",
    "giou_weight": "giou_loss_weight",
    "label_weight": "label_loss_weight",
    "background_class_weight": "background_class_weight",
    "saliency_weight": "saliency_loss_weight",
    "saliency_margin": "saliency_margin",
    "retrieval_weight": "retrieval_loss_weight",
    "contrastive_temperature": "contrastive_temperature",
    "matcher_l1_cost": "matcher_span_l1_cost",
    "matcher_giou_cost": "matcher_giou_cost",
    "matcher_class_cost": "matcher_class_cost",
    "auxiliary_loss": "use_auxiliary_loss",
    "pair_mode": "pair_mode",
}


@pytest.fixture(scope="session")
def original_fixtures_dir() -> Path:
    """Folder of the original implementation's reference files; skips the test when it is absent."""
    if not (ORIGINAL_FIXTURES_DIR / "README.md").is_file():
        pytest.skip(
            f"original-implementation fixtures not found at {ORIGINAL_FIXTURES_DIR} "
            "(set RGNET_FIXTURES_DIR to the folder holding rgnet_tiny_mad.json etc.)"
        )
    return ORIGINAL_FIXTURES_DIR


@pytest.fixture
def fresh_compiler():
    """`torch.compile`'s caches emptied before and after the test (compiled graphs do not leak between tests)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
