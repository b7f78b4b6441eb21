"""Small datasets cut out of the real COCO fixture for tests that train or evaluate."""

import json
import shutil
from pathlib import Path

TRAIN_IDS = (12448, 318219, 328757, 337264)  # one main person each: 4 samples, 2 steps/epoch
VAL_IDS = (25560, 85329, 143931)


def subset(fixture: Path, split: str, ids, root: Path, name: str) -> None:
    """Write the images ``ids`` of the fixture's ``split`` as split ``name`` under ``root``."""
    data = json.loads((fixture / "annotations" / f"person_keypoints_{split}.json").read_text())
    data["images"] = [i for i in data["images"] if i["id"] in ids]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"person_keypoints_{name}.json").write_text(json.dumps(data))
    (root / name).mkdir()
    for image in data["images"]:
        shutil.copy(fixture / split / image["file_name"], root / name)
