"""Where the files shipped beside the code live: reward cards and community pipelines.

In a wheel they sit inside the package (``mmalign/_cards``, ``mmalign/_pipelines``, see
pyproject.toml); in a source checkout they are the top-level ``rewards/`` and ``pipelines/``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_LOCATIONS = {
    "cards": (_PACKAGE_DIR / "_cards", _PACKAGE_DIR.parent / "rewards"),
    "pipelines": (_PACKAGE_DIR / "_pipelines", _PACKAGE_DIR.parent / "pipelines"),
}


def resource_dir(kind: str) -> Path:
    """The folder holding the shipped ``kind`` ("cards" or "pipelines")."""
    for candidate in _LOCATIONS[kind]:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"mmalign's {kind} folder is missing (looked in {', '.join(map(str, _LOCATIONS[kind]))}); "
        "reinstall mmalign with `pip install --force-reinstall mmalign`."
    )
