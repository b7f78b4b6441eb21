"""Inference spec (``bpnet evaluate -i`` / ``bpnet inference -i``): TAO's infer-spec field names.

A TAO ``infer_spec.yaml`` reads unchanged (``model_path`` and ``train_spec`` are accepted; the
command line's ``-m`` wins). Fields after ``scales`` are ours: TAO hard-codes them in its
post-processor. The decoder's settings default to :class:`~bpnet.decode.DecoderParams`'s values
(TAO's, except the peak search, ``heatmap_threshold`` and ``min_mean_score``: see its
docstring); :meth:`InferenceSpec.decoder_params` hands them to the decoder.

Example (TAO's "strict" mode, used to compare FP32 / FP16 / INT8)::

    input_shape: [288, 384]
    keep_aspect_ratio_mode: pad_image_input
    multi_scale_inference: false
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bpnet.config.spec import _check_side, _require
from bpnet.decode.decoder import DecoderParams

_DECODER = DecoderParams()  # the decoder's defaults are the spec's


@dataclass(frozen=True)
class InferenceSpec:
    """How images become network inputs and how network outputs become people.

    Attributes:
        model_path: accepted for TAO compatibility; the command line's model argument wins.
        train_spec: accepted for TAO compatibility (the experiment spec of the model).
        input_shape: network input [height, width] in pixels, multiples of the stride (8).
        keep_aspect_ratio_mode: ``adjust_network_input`` keeps ``input_shape[0]`` as the
            height and widens or narrows the input to the image's aspect ratio (rounded to a
            multiple of 8); ``pad_image_input`` keeps ``input_shape`` fixed and pads the
            resized image (TAO's "strict" mode, the one for engines with fixed inputs).
        output_stage_to_use: 1-based stage whose outputs are decoded; None is the last.
        output_upsampling_factor: [fy, fx] factors the heatmaps are upsampled by before the
            peak search. [1, 1] (ours) searches the output grid and upsamples only windows
            around peaks that hold two joints of one type; TAO's [8, 8] (the stride: one map
            pixel per input pixel) upsamples every heatmap and finds the same peaks several
            times slower (docs/BENCHMARKS.md).
        heatmap_threshold: minimum heatmap value at a peak, before smoothing (TAO: 0.1; ours,
            0.05, tuned on real network maps, finds the joints of small people).
        paf_threshold: minimum PAF . limb-direction value for a line-integral sample to count.
        multi_scale_inference: average the maps of several input scales before decoding.
        scales: input scale factors used when ``multi_scale_inference`` is true.
        smoothing_sigma: Gaussian smoothing of the heatmaps before peak search, in network
            input pixels (TAO: 3 pixels of the x8 upsampled map); 0 disables it.
        line_integral_samples: samples along each candidate limb (TAO: 10).
        min_paf_fraction: fraction of those samples that must pass ``paf_threshold`` (TAO: 0.8).
        min_parts: people with fewer joints are dropped (TAO: 4).
        min_mean_score: people whose mean joint-and-limb score is lower are dropped (TAO: 0.4,
            but TAO divides the sum of joint and limb scores by the joint count, ~2 for a clean
            person: the default 0.2 is TAO's 0.4 on this scale).
        fragment_merge_ratio: partial people that no PAF links because one or two joints
            between them are missing (the neck of a person seen from the side) are merged when
            the joints beside
            the gap are at most this many times the larger piece's size apart; 0 turns it off
            (TAO's behaviour). See :func:`bpnet.decode.paf.merge_fragments`.
        max_people: keep at most this many people per image, best first; None keeps all.
    """

    model_path: str | None = None
    train_spec: str | None = None
    input_shape: tuple[int, int] = (368, 368)
    keep_aspect_ratio_mode: Literal["adjust_network_input", "pad_image_input"] = (
        "adjust_network_input"
    )
    output_stage_to_use: int | None = None
    output_upsampling_factor: tuple[int, int] = _DECODER.upsampling_factor
    heatmap_threshold: float = _DECODER.heatmap_threshold
    paf_threshold: float = _DECODER.paf_threshold
    multi_scale_inference: bool = False
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    smoothing_sigma: float = _DECODER.smoothing_sigma
    line_integral_samples: int = _DECODER.line_integral_samples
    min_paf_fraction: float = _DECODER.min_paf_fraction
    min_parts: int = _DECODER.min_parts
    min_mean_score: float = _DECODER.min_mean_score
    fragment_merge_ratio: float = _DECODER.fragment_merge_ratio
    max_people: int | None = _DECODER.max_people

    def __post_init__(self):
        _check_side(self.input_shape[0], "input_shape[0]")
        _check_side(self.input_shape[1], "input_shape[1]")
        _require(
            self.output_stage_to_use is None or self.output_stage_to_use >= 1,
            "output_stage_to_use",
            f"must be a 1-based stage number or null (the last), got {self.output_stage_to_use}",
        )
        _require(
            all(f >= 1 for f in self.output_upsampling_factor),
            "output_upsampling_factor",
            f"factors must be >= 1, got {list(self.output_upsampling_factor)}",
        )
        _require(
            0 <= self.heatmap_threshold < 1, "heatmap_threshold", "must be in [0, 1) (try 0.1)"
        )
        _require(-1 <= self.paf_threshold < 1, "paf_threshold", "must be in [-1, 1) (try 0.05)")
        _require(
            len(self.scales) > 0 and all(s > 0 for s in self.scales),
            "scales",
            f"must be a non-empty list of positive factors, got {list(self.scales)}",
        )
        _require(self.smoothing_sigma >= 0, "smoothing_sigma", "must be >= 0 (0: no smoothing)")
        _require(self.line_integral_samples >= 2, "line_integral_samples", "must be >= 2")
        _require(0 <= self.min_paf_fraction <= 1, "min_paf_fraction", "must be in [0, 1]")
        _require(self.min_parts >= 1, "min_parts", f"must be >= 1, got {self.min_parts}")
        _require(0 <= self.min_mean_score <= 1, "min_mean_score", "must be in [0, 1]")
        _require(self.fragment_merge_ratio >= 0, "fragment_merge_ratio", "must be >= 0 (0: off)")
        _require(
            self.max_people is None or self.max_people >= 1,
            "max_people",
            "must be >= 1 or null (no limit)",
        )

    def decoder_params(self) -> DecoderParams:
        """The decoder settings of this spec."""
        return DecoderParams(
            upsampling_factor=tuple(self.output_upsampling_factor),
            smoothing_sigma=self.smoothing_sigma,
            heatmap_threshold=self.heatmap_threshold,
            paf_threshold=self.paf_threshold,
            line_integral_samples=self.line_integral_samples,
            min_paf_fraction=self.min_paf_fraction,
            min_parts=self.min_parts,
            min_mean_score=self.min_mean_score,
            max_people=self.max_people,
            fragment_merge_ratio=self.fragment_merge_ratio,
        )

    @property
    def mode(self) -> Literal["default", "strict", "multi_scale"]:
        """A label for reports: ``multi_scale``, ``strict`` (padded fixed input) or ``default``."""
        if self.multi_scale_inference:
            return "multi_scale"
        if self.keep_aspect_ratio_mode == "pad_image_input":
            return "strict"
        return "default"
