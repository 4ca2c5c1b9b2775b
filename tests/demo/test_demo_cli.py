"""`mmalign demo` as a user starts it, its one-line errors, and the labels it collects turned into a
D3PO run with `mmalign train d3po --prefs`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from test_cli import mmalign

PROMPT = "a red circle left of a blue square"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_mmalign_demo_serves_on_the_loopback_until_stopped(tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mmalign", "demo", "--port", str(port), "--output-dir", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 120, None
        while page is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert page is not None, f"the demo did not come up: {server.stdout.read() if server.poll() is not None else ''}"
        assert "mmalign demo" in page
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"127.0.0.1:{port}" in output and "gradio.live" not in output  # no share link
    assert (tmp_path / "preferences.db").is_file()


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port: must lie in 1–65535"),
    (["--device", "cuda:7"], "--device"),
    (["--reward", "no-such-reward"], "unknown reward 'no-such-reward'"),
    (["--lora", "."], "holds no pytorch_lora_weights.safetensors"),
    (["--model", "no/such/model"], "--model"),
])
def test_bad_demo_input_is_one_line(args, message, tmp_path):
    result = mmalign("demo", "--output-dir", tmp_path, *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_lora_of_another_base_stops_the_demo_before_serving(foreign_lora, tmp_path):
    result = mmalign("demo", "--lora", foreign_lora, "--output-dir", tmp_path)
    assert result.returncode == 2 and "another base model" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_labels_train_d3po_with_one_command(session, tmp_path):
    for seed, choice in enumerate(["left", "right", "left", "tie"]):
        session.vote(session.compare(PROMPT, seed=seed, method="best-of-N", num_candidates=2, progress=False), choice)
    store = session.store.path
    result = mmalign("train", "d3po", "--prefs", store, "model=shapes-sd", f"output_dir={tmp_path / 'run'}",
                     "num_iterations=1", "prompts_per_iteration=3", "num_inference_steps=4", "rank=2", "eval_every=0", "report_to=none", "--json")
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)["final"]
    assert final["pairs"] == 3 and 0 <= final["implicit_accuracy"] <= 1
    assert f"preferences: {store}" in (tmp_path / "run" / "config.yaml").read_text()
    assert (tmp_path / "run" / "pytorch_lora_weights.safetensors").is_file()
