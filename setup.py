"""Build hook: the wheel carries the program library (sources and objects compiled here, once,
with clang) and the driver profiles as package data under offload/_data/, and its JSON Schemas
completed from the one mode vocabulary (offload/probe/schemagen.py). Metadata lives in
pyproject.toml."""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _standalone(name: str, relpath: str):
    """A standard-library-only module of offload's, loaded before offload's dependencies exist."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        schemagen = _standalone("offload_schemagen", "offload/probe/schemagen.py")
        mode = _standalone("offload_mode", "offload/probe/mode.py")
        schemagen.generate(Path(self.build_lib) / "offload" / "schemas", schemagen.vocabularies(mode))
        if getattr(self, "editable_mode", False):
            return  # an editable install reads bpf/ and drivers_profiles/ from the checkout
        data = Path(self.build_lib) / "offload" / "_data"
        shutil.rmtree(data, ignore_errors=True)
        for pattern in ("*.c", "*.h", "generators/*.c"):
            for src in (ROOT / "bpf").glob(pattern):
                dest = data / "bpf" / src.relative_to(ROOT / "bpf")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
        (data / "drivers_profiles").mkdir(parents=True)
        for src in (ROOT / "drivers_profiles").glob("*.yaml"):
            shutil.copy2(src, data / "drivers_profiles" / src.name)
        # offload/load/compile.py is standard-library only, so it runs before offload's
        # dependencies are installed.
        compile_mod = _standalone("offload_compile", "offload/load/compile.py")
        try:
            compile_mod.build_library(data / "bpf", data / "bpf" / "obj")
        except compile_mod.CompileFailed as e:
            raise SystemExit(f"{e.src}: does not compile:\n{e.message}") from None


setup(cmdclass={"build_py": BuildWithData})
