"""Issue 14 fix 4's proxy: the share of each refinement stage's first-conv weights below 1e-3 in
magnitude, on the previous stage's maps and on the features, from a checkpoint of TAO's stage
layout (``stageN.trunk.conv1``, input concat[F, heatmaps, PAFs]).

Usage::

    python benchmarks/dead_map_weights.py runs/demo1k_fix3/model_epoch_030.pth ...
"""

from __future__ import annotations

import argparse

from bpnet.models import arch_graph
from bpnet.models.checkpoint import load_checkpoint

SMALL = 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    print("| checkpoint | stage | maps < 1e-3 | features < 1e-3 |\n|---|---|---|---|")
    for path in args.checkpoints:
        checkpoint = load_checkpoint(path)
        features = arch_graph(checkpoint["arch"]).feature_width
        state = checkpoint["state_dict"]
        stage = 2
        while (key := f"stage{stage}.trunk.conv1.weight") in state:
            weight = state[key].abs()
            maps, feats = weight[:, features:], weight[:, :features]
            share = [float((part < SMALL).float().mean()) for part in (maps, feats)]
            print(f"| {path} | {stage} | {share[0]:.0%} | {share[1]:.0%} |")
            stage += 1


if __name__ == "__main__":
    main()
