"""mmalign: align generative models with rewards."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmalign")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0.0.0+unknown"

from .rewards import Reward, RewardOutput, RewardSpec, list_rewards, load_reward  # noqa: E402

__all__ = ["Reward", "RewardOutput", "RewardSpec", "__version__", "list_rewards", "load_reward"]
