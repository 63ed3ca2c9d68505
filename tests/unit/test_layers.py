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
    "data": {"errors"},
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
