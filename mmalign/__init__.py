"""mmalign: align generative models with rewards."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmalign")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"

from .rewards import Reward, RewardOutput, RewardSpec, list_rewards, load_reward  # noqa: E402

__all__ = ["BestOfNPipeline", "FlowNRGPipeline", "ReNOPipeline", "Reward", "RewardOutput", "RewardSpec", "__version__", "list_rewards",
           "load_reward", "pipelines_path"]


def __getattr__(name: str):
    # the pipelines import diffusers; `import mmalign` for rewards alone should not
    import importlib

    pipelines = importlib.import_module(".pipelines", __name__)

    if name == "pipelines_path":
        return pipelines.pipelines_path
    for file_name, class_name in pipelines.PIPELINE_CLASSES.items():
        if name == class_name:
            return pipelines.pipeline_class(file_name)
    raise AttributeError(f"module 'mmalign' has no attribute {name!r}")
