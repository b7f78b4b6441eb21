"""Package layering: no bpnet package imports one from a layer above it (lazy imports included)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "bpnet"

# lower layers first; a package may import its own layer and those below it
LAYERS = (
    {"errors", "io", "encryption", "progress", "grid", "__init__"},
    {"pose"},
    {"decode", "targets", "visualize"},
    {"config"},
    {"data", "models", "loss"},
    {"inference"},
    {"evaluate", "export"},
    {"train", "bench"},
    {"prune", "convert"},
    {"demo"},  # the whole workflow: every layer below
    {"cli", "__main__"},
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def package_of(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_no_package_imports_from_a_layer_above():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        own = package_of(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "bpnet" and len(parts) > 1 and parts[1] != own:
                    if RANK[parts[1]] > RANK[own]:
                        upward.append(f"{path.relative_to(SRC)} imports {module}")
    assert not upward, "\n".join(upward)


def test_every_package_has_a_layer():
    packages = {package_of(p) for p in SRC.rglob("*.py")}
    assert packages <= set(RANK), packages - set(RANK)
