"""Run by ``torchrun --nproc_per_node 2`` from test_raft.py: a tiny RAFT run, after which every
process writes its world size and its trained LoRA weights, for the test to compare."""

import sys
from pathlib import Path

import torch

from mmalign.algorithms.finetune import finetune
from mmalign.algorithms.raft import RAFTConfig, raft_method
from mmalign.sampling.pipelines import denoiser

model_dir, output_dir = sys.argv[1], Path(sys.argv[2])
config = RAFTConfig(model=model_dir, output_dir=str(output_dir), num_iterations=2, prompts_per_iteration=4,
                    num_samples_per_prompt=2, train_batch_size=2, num_inference_steps=2, guidance_scale=2.0,
                    learning_rate=1e-2, rank=2, eval_every=0, report_to="none", global_top_fraction=0.5)
method = raft_method(config)
history = finetune(method)
from accelerate import PartialState  # noqa: E402

state = PartialState()
lora = {name: p.detach().clone() for name, p in denoiser(method.pipeline).named_parameters() if "lora" in name}
torch.save({"world_size": state.num_processes, "rank": state.process_index, "lora": lora, "history": history},
           output_dir / f"rank{state.process_index}.pt")
