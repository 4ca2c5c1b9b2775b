"""Shared fixtures; the toy rewards themselves live in toys.py."""

import pytest

from toys import write_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))
