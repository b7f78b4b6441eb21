"""Network maps -> people: peak search, PAF limb scoring, matching and assembly."""

from bpnet.decode.decoder import DecoderParams, People, decode
from bpnet.decode.peaks import find_peaks

__all__ = ["DecoderParams", "People", "decode", "find_peaks"]
