"""Synthetic COCO-format person-keypoint data: articulated, shaded people in cluttered scenes.

No public dataset can be downloaded where bpnet is developed and tested, so it ships its own:
``generate_dataset`` writes images and ``person_keypoints_*.json`` files that the COCO tools
(and bpnet's loader) read unchanged. Modules: ``figure`` (body model and poses), ``render``
(drawing), ``scene`` (one annotated picture), ``writer`` (the dataset on disk).
"""

from bpnet.data.synth.writer import generate_dataset, synth_command

__all__ = ["generate_dataset", "synth_command"]
