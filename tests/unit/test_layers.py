"""The package's layers, read from the modules' own imports: a lower layer never imports a higher
one (docs/architecture.md draws the same picture)."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "offload"

# What each layer may import besides itself, lowest first. Top level (cli, lab, render, __main__)
# may import everything.
ALLOWED = {
    "errors": set(),
    "data": {"kernel", "errors"},
    "kernel": {"errors"},
    "probe": {"kernel", "data", "errors"},
    "load": {"probe", "kernel", "data", "errors"},
    "bench.generators": {"kernel", "data", "errors"},
    "bench": {"load", "probe", "kernel", "data", "errors"},
    "orchestrate": {"load", "probe", "kernel", "data", "errors"},
}


def layer_of(module: str) -> str:
    """'offload.bench.generators.pktgen' -> 'bench.generators'; top-level modules -> 'top'."""
    parts = module.split(".")[1:]
    if parts[:2] == ["bench", "generators"]:
        return "bench.generators"
    if parts and parts[0] in ALLOWED:
        return parts[0]
    return "top"


def offload_imports(path: Path) -> set[str]:
    """Every offload module a file imports, at any depth (function-level imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "offload":
                out |= {f"offload.{a.name}" for a in node.names}
            elif node.module.startswith("offload."):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("offload.")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the layers are read from absolute ones")
    return out


def modules() -> list[tuple[str, Path]]:
    return [("offload." + ".".join(p.relative_to(PKG).with_suffix("").parts), p) for p in sorted(PKG.rglob("*.py"))]


@pytest.mark.parametrize("module,path", modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_layer_imports_a_higher_one(module, path):
    mine = layer_of(module)
    if mine == "top":
        return
    allowed = ALLOWED[mine] | {mine}
    if mine == "bench":
        allowed |= {"bench.generators"}
    bad = sorted(m for m in offload_imports(path) if layer_of(m) not in allowed)
    assert not bad, f"{module} (layer {mine}) imports {bad}; it may import only {sorted(allowed)}"


def test_the_rule_catches_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from offload.orchestrate import plan\n")
    assert offload_imports(f) == {"offload.orchestrate"} or offload_imports(f) == {"offload.orchestrate.plan"}
    assert layer_of("offload.orchestrate.plan") not in ALLOWED["kernel"]
    assert layer_of("offload.kernel.xdp") == "kernel" and layer_of("offload.cli") == "top"
    assert layer_of("offload.bench.generators.pktgen") == "bench.generators"


ARCH = PKG.parent / "docs" / "architecture.md"
LABELS = ("top level", "orchestrate", "bench", "load", "probe", "kernel", "data", "errors")


def diagram(text: str) -> dict[str, set[str]]:
    """The words docs/architecture.md's layer diagram lists under each layer. A row starts with the
    layer's label, a continuation row with blanks only; '│' splits a row into side-by-side layers."""
    block = text.split("```", 2)[1]
    rows: dict[str, set[str]] = {}
    current: list[str] = []
    for line in block.splitlines():
        if not line.strip() or set(line.strip()) <= {"─"}:
            continue
        cells = line.split("│")
        if any(_label(c) for c in cells):
            current = []
            for cell in cells:
                label = _label(cell)
                current.append(label)
                rows.setdefault(label, set()).update(cell.strip().removeprefix(label).split())
            continue
        for label, cell in zip(current, cells):
            rows[label].update(cell.split())
    return rows


def _label(cell: str) -> str | None:
    return next((la for la in LABELS if (cell.strip() + " ").startswith(la + " ")), None)


def diagram_layer(module: str) -> str:
    """The diagram's row for a module: its layer, with bench.generators inside bench and top-level
    modules (data and errors have rows of their own) under 'top level'."""
    layer = layer_of(module)
    if layer in ("data", "errors"):
        return layer
    return {"bench.generators": "bench", "top": "top level"}.get(layer, layer)


def test_every_module_stands_in_the_architecture_diagram():
    rows = diagram(ARCH.read_text())
    missing = []
    for module, path in modules():
        if path.name == "__init__.py":
            continue
        layer = diagram_layer(module)
        name = "generators/" if layer_of(module) == "bench.generators" else module.rsplit(".", 1)[-1]
        if layer in ("data", "errors") and layer in rows:   # a row of its own: the label is the module
            continue
        if name not in rows.get(layer, set()):
            missing.append(f"{module} (layer {layer})")
    assert not missing, f"docs/architecture.md's diagram does not list: {missing}"


def test_the_diagram_check_catches_a_missing_module():
    text = "```\n top level     cli  lab\n ───\n kernel        nlraw  rtnl\n               fs\n```\n"
    rows = diagram(text)
    assert rows["kernel"] == {"nlraw", "rtnl", "fs"} and rows["top level"] == {"cli", "lab"}
    assert "xdp" not in rows["kernel"]
    side = diagram("```\n orchestrate   plan  apply   │  bench   harness\n               watch         │          frames\n```")
    assert side == {"orchestrate": {"plan", "apply", "watch"}, "bench": {"harness", "frames"}}
