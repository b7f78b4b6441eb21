"""Data: COCO-layout datasets, loss masks, augmentation and the training/evaluation loaders."""
