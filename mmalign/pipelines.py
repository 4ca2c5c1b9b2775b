"""The community pipelines shipped with mmalign, for users who have it installed.

The files in ``pipelines/`` load without mmalign's help through
``DiffusionPipeline.from_pretrained(base, custom_pipeline=mmalign.pipelines_path("reno"), trust_remote_code=True)``.
Here the same classes are importable, for ``ReNOPipeline.from_pipe(pipe)`` and type checks:

>>> from mmalign import ReNOPipeline
>>> reno = ReNOPipeline.from_pipe(sd_turbo)
"""

from __future__ import annotations

from pathlib import Path

from ._resources import import_shipped_file, resource_dir
from .errors import InvalidInputError

PIPELINE_CLASSES = {"reno": "ReNOPipeline", "best_of_n": "BestOfNPipeline", "flow_nrg": "FlowNRGPipeline"}


def pipelines_path(name: str) -> str:
    """The path of a shipped community-pipeline file, as ``custom_pipeline=`` takes it."""
    if name not in PIPELINE_CLASSES:
        raise InvalidInputError(f"name: no community pipeline {name!r}; shipped: {', '.join(PIPELINE_CLASSES)}.")
    return str(resource_dir("pipelines") / f"{name}.py")


def pipeline_class(name: str):
    """The ``DiffusionPipeline`` subclass a shipped file defines, imported once."""
    module = import_shipped_file(f"mmalign_community_{name}", Path(pipelines_path(name)))
    return getattr(module, PIPELINE_CLASSES[name])
