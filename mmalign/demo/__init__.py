"""The side-by-side demo's engine: base against aligned (ReNO, best-of-N, a LoRA), scored and judged,
with votes into the preference store. The Gradio page is ``demos/app.py``, started by ``mmalign demo``."""

from __future__ import annotations

from .._resources import import_shipped_file, resource_dir
from ..errors import require
from .session import METHODS, Comparison, DemoSession


def app_module():
    """``demos/app.py`` (shipped in the wheel as ``mmalign/_demos/app.py``), imported once; it needs
    gradio, the ``demo`` extra."""
    require("gradio", extra="demo")
    return import_shipped_file("mmalign_demo_app", resource_dir("demos") / "app.py")


__all__ = ["METHODS", "Comparison", "DemoSession", "app_module"]
