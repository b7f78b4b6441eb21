from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "data" / "coco_fixture"


@pytest.fixture(scope="session")
def coco_fixture() -> Path:
    """The real COCO fixture (100 images) that ships beside the repository."""
    assert (FIXTURE / "annotations").is_dir(), f"COCO fixture missing at {FIXTURE}"
    return FIXTURE
