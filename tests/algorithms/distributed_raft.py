"""Run by ``torchrun --nproc_per_node 2`` from test_raft.py and test_d3po_prdp.py: a tiny run of a
method (RAFT by default, or ``d3po``/``prdp``), after which every process writes its world size and
its trained LoRA weights, for the test to compare."""

import sys
from pathlib import Path

import torch

from mmalign.algorithms.d3po import D3PO, D3POConfig
from mmalign.algorithms.finetune import finetune
from mmalign.algorithms.prdp import PRDP, PRDPConfig
from mmalign.algorithms.raft import RAFTConfig, raft_method
from mmalign.sampling.pipelines import denoiser

model_dir, output_dir = sys.argv[1], Path(sys.argv[2])
method_name = sys.argv[3] if len(sys.argv) > 3 else "raft"
common = dict(model=model_dir, output_dir=str(output_dir), num_iterations=2, prompts_per_iteration=4, train_batch_size=2,
              num_inference_steps=2, guidance_scale=2.0, learning_rate=1e-2, rank=2, eval_every=0, report_to="none")
if method_name == "raft":
    method = raft_method(RAFTConfig(**common, num_samples_per_prompt=2, global_top_fraction=0.5))
elif method_name == "d3po":
    method = D3PO(D3POConfig(**common, reward="jpeg-compressibility"))
else:
    method = PRDP(PRDPConfig(**common, reward="jpeg-compressibility", samples_per_prompt=2, beta=1.0, clip_range=0.01))
history = finetune(method)
from accelerate import PartialState  # noqa: E402

state = PartialState()
lora = {name: p.detach().clone() for name, p in denoiser(method.pipeline).named_parameters() if "lora" in name}
torch.save({"world_size": state.num_processes, "rank": state.process_index, "lora": lora, "history": history},
           output_dir / f"rank{state.process_index}.pt")
