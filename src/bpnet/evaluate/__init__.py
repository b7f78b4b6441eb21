"""Evaluation: people -> COCO keypoint detections -> COCO AP (pycocotools, maxDets 20)."""
