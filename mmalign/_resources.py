"""Where the files shipped beside the code live: reward cards, community pipelines and the demo.

In a wheel they sit inside the package (``mmalign/_cards``, ``mmalign/_pipelines``,
``mmalign/_demos``, see pyproject.toml); in a source checkout they are the top-level ``rewards/``,
``pipelines/`` and ``demos/``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_PACKAGE_DIR = Path(__file__).resolve().parent
_LOCATIONS = {
    "cards": (_PACKAGE_DIR / "_cards", _PACKAGE_DIR.parent / "rewards"),
    "pipelines": (_PACKAGE_DIR / "_pipelines", _PACKAGE_DIR.parent / "pipelines"),
    "demos": (_PACKAGE_DIR / "_demos", _PACKAGE_DIR.parent / "demos"),
}


def resource_dir(kind: str) -> Path:
    """The folder holding the shipped ``kind`` ("cards", "pipelines" or "demos")."""
    for candidate in _LOCATIONS[kind]:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"mmalign's {kind} folder is missing (looked in {', '.join(map(str, _LOCATIONS[kind]))}); "
        "reinstall mmalign with `pip install --force-reinstall mmalign`."
    )


def import_shipped_file(module_name: str, path: Path) -> ModuleType:
    """The Python file at ``path`` (a community pipeline, the demo app) as module ``module_name``,
    imported once: these files sit outside the package's import path on purpose."""
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module
