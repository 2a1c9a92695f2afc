"""The dependency direction of DESIGN.md, enforced by walking every import with `ast`."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "muppets"
# Top to bottom: a module may import its own layer and the layers listed before it.
LAYERS = [
    "errors",
    "tokenization",
    "data",
    "models",
    "tasks",
    "training",
    "recipes",
    "crosslingual",  # a product, as quickstart: it calls the finetune and evaluate recipes
    "quickstart",
    "serve",
    "cli",
]
# Package-level modules that sit outside the pipeline.
TOP = {"__init__": len(LAYERS), "__main__": len(LAYERS)}


def layer_of(module: str) -> int | None:
    """Rank of `muppets.<layer>...`; None for modules outside muppets."""
    parts = module.split(".")
    if parts[0] != "muppets":
        return None
    if len(parts) == 1:
        return TOP["__init__"]
    name = parts[1]
    return LAYERS.index(name) if name in LAYERS else TOP.get(name, len(LAYERS))


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_import_points_up_the_layers():
    wrong = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        module = ".".join(("muppets",) + path.relative_to(PACKAGE).with_suffix("").parts)
        own = layer_of(module)
        for lineno, target in imports_of(path):
            rank = layer_of(target)
            if rank is not None and rank > own:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{lineno} imports {target}")
    assert not wrong, "imports against the layer direction:\n" + "\n".join(wrong)


def recipe_of(module: str) -> str | None:
    """`muppets.recipes.<recipe>...` -> the recipe's name (a module or a package)."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["muppets", "recipes"] and len(parts) > 2 else None


def test_no_recipe_imports_another_recipe():
    wrong = []
    for path in sorted((PACKAGE / "recipes").rglob("*.py")):
        module = ".".join(("muppets",) + path.relative_to(PACKAGE).with_suffix("").parts)
        own = recipe_of(module)
        for lineno, target in imports_of(path):
            other = recipe_of(target)
            if other is not None and other != own:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{lineno} imports {target}")
    assert not wrong, "recipes importing other recipes:\n" + "\n".join(wrong)


def test_the_layers_are_the_package_tree():
    """Every sub-package of muppets has its place in LAYERS: none slips past the check."""
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")} - {"samples"}
    assert packages == set(LAYERS) - {"errors"}


def test_errors_imports_nothing_from_muppets():
    assert not [t for _, t in imports_of(PACKAGE / "errors.py") if t.startswith("muppets")]


def test_the_checker_catches_a_wrong_way_edge(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from muppets.training.loop import train\n")
    assert layer_of("muppets.data.text") < layer_of(imports_of(bad)[0][1])
    assert recipe_of("muppets.recipes.finetune.features") == "finetune"
    assert recipe_of("muppets.recipes.pretrain") != recipe_of("muppets.recipes.pretrain_elmo")
