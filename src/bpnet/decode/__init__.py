"""Network maps -> people: peak search, PAF limb scoring, matching and assembly."""

from bpnet.decode.decoder import DecoderParams, People, average_maps, decode, find_peaks

__all__ = ["DecoderParams", "People", "average_maps", "decode", "find_peaks"]
