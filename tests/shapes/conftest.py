import pytest

from mmalign.shapes import train_sd


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A shapes-sd folder trained for a handful of steps: the teacher/base of the other recipes' tests."""
    directory = tmp_path_factory.mktemp("tiny-sd")
    summary = train_sd.train(directory, steps=40, seed=0, resume=False, vae_steps=40, train_images=256, batch_size=16)
    return directory, summary
