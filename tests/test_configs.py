"""The shipped config files: every accelerate launch config parses as accelerate reads it, and every
method config builds its dataclass (so a renamed field cannot leave a config file behind)."""

from pathlib import Path

import pytest

from mmalign.algorithms import RAFTConfig
from mmalign.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPECTED_LAUNCH = {
    "single_gpu": ("NO", 1), "multi_gpu": ("MULTI_GPU", 8), "fsdp": ("FSDP", 8),
    "deepspeed_zero2": ("DEEPSPEED", 8), "deepspeed_zero3": ("DEEPSPEED", 8), "multi_node": ("MULTI_GPU", 16),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_LAUNCH))
def test_accelerate_configs_parse_as_accelerate_reads_them(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / "accelerate" / f"{name}.yaml"))
    assert (config.distributed_type.value, config.num_processes) == EXPECTED_LAUNCH[name]
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "fsdp":
        assert config.fsdp_config["fsdp_use_orig_params"] is True  # LoRA's frozen and trained weights side by side


@pytest.mark.parametrize("path", sorted((CONFIGS / "raft").glob("*.yaml")), ids=lambda p: p.stem)
def test_raft_configs_build_their_dataclass(path):
    config = load_config(RAFTConfig, path)
    assert config.model in {"shapes-sd", "shapes-lm"} and config.num_samples_per_prompt > 1


@pytest.mark.parametrize("method", ["flow-dpo", "flow-rwr"])
def test_flow_configs_build_their_dataclass(method):
    from mmalign.algorithms import FlowDPOConfig, FlowRWRConfig

    config = load_config({"flow-dpo": FlowDPOConfig, "flow-rwr": FlowRWRConfig}[method], CONFIGS / method / "shapes-video.yaml")
    assert config.model == "shapes-video" and config.reward == "shapes-video-reward" and config.lora_alpha == 2 * config.rank
