"""offload: put XDP programs on NICs in the best mode each supports, and measure them."""

__version__ = "0.1.0"


def _pyroute2_lazily() -> None:
    """Register the pyroute2 package without running its __init__, which imports every family it
    has (ndb, ipdb, conntrack, asyncio, ...: ~0.13 s, more than a probe's decoding). offload
    imports the submodules it uses (`pyroute2.iproute`, `pyroute2.netlink.devlink`); anyone asking
    the package itself for a name (`from pyroute2 import IPRoute`) gets the real __init__ run then,
    once, so other code in the process sees pyroute2 as usual."""
    import sys

    if "pyroute2" in sys.modules:
        return
    from importlib.util import find_spec, module_from_spec

    spec = find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # not installed: the code that needs it says so when it imports it
    pkg = module_from_spec(spec)

    def __getattr__(name: str):
        import importlib

        try:  # `from pyroute2 import netns` inside pyroute2: just the submodule
            return importlib.import_module(f"pyroute2.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"pyroute2.{name}":
                raise
        del pkg.__getattr__
        spec.loader.exec_module(pkg)   # the package's own __init__, as a plain import would run it
        return getattr(pkg, name)

    pkg.__getattr__ = __getattr__
    sys.modules["pyroute2"] = pkg


_pyroute2_lazily()
