"""The command line, through a subprocess, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = sorted((Path(__file__).parents[1] / "demos" / "samples").glob("*.png"))


def mmalign(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmalign", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_rewards_lists_the_cards():
    result = mmalign("rewards")
    assert result.returncode == 0, result.stderr
    assert "jpeg-compressibility" in result.stdout and "laion-aesthetic" in result.stdout
    cards = json.loads(mmalign("rewards", "--json").stdout)
    assert {"clip", "laion-aesthetic"} <= {card["name"] for card in cards}


def test_score_png_files_as_json_and_writes_scores(tmp_path):
    assert len(SAMPLES) >= 3
    result = mmalign("score", "--reward", "jpeg-compressibility", "--reward", "jpeg-incompressibility=0.5",
                     "--output-dir", tmp_path, "--json", *SAMPLES)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["image"] for r in report["results"]] == [str(p) for p in SAMPLES]
    for row in report["results"]:
        size = row["scores"]["jpeg-incompressibility"]
        assert row["scores"]["jpeg-compressibility"] == pytest.approx(-size)
        assert row["total"] == pytest.approx(-size + 0.5 * size, abs=1e-5)
    assert json.loads((tmp_path / "scores.json").read_text()) == report


def test_score_table_with_a_clip_folder_and_a_prompt(tiny_clip_dir, tmp_path):
    result = mmalign("score", "--reward", f"local-dir:{tiny_clip_dir}", "--prompt", "a red circle",
                     "--output-dir", tmp_path, *SAMPLES)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "image" and len(lines) == 2 + len(SAMPLES)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reward", "jpeg-compresibility"], "Did you mean 'jpeg-compressibility'"),
        (["--reward", "jpeg-compressibility", "--batch-size", "0"], "--batch-size"),
        (["--reward", "jpeg-compressibility", "missing.png"], "does not exist"),
        (["--reward", "local-dir:{clip}"], "pass `prompts=`"),
        (["--reward", "jpeg-compressibility=nan"], "weights: must be finite"),
        (["--reward", "jpeg-compressibility", "--device", "gpu0"], "--device"),
        (["--reward", "jpeg-compressibility", "--output-dir", "{file}"], "--output-dir: cannot use"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, tiny_clip_dir, tmp_path):
    (tmp_path / "a-file").write_text("")
    args = [a.format(clip=tiny_clip_dir, file=tmp_path / "a-file") for a in args]
    images = [] if "missing.png" in args else SAMPLES
    result = mmalign("score", "--output-dir", tmp_path, *args, *images, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("mmalign score: error:")
