"""Images -> network maps -> people: input geometry, multi-scale fusion, decoding."""

from bpnet.inference.pipeline import (
    MapSource,
    Prediction,
    Predictor,
    ScaledInput,
    input_geometry,
    predict_people,
)

__all__ = [
    "MapSource",
    "Prediction",
    "Predictor",
    "ScaledInput",
    "input_geometry",
    "predict_people",
]
