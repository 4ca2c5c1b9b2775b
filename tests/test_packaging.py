"""The wheel carries the reward cards, the community pipelines and the demo inside the package."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_wheel_ships_cards_and_pipelines(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("mmalign-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for card in (ROOT / "rewards").glob("*.json"):
        assert f"mmalign/_cards/{card.name}" in names
    for pipeline in (ROOT / "pipelines").glob("*.py"):  # not __pycache__, which importing the files writes
        assert f"mmalign/_pipelines/{pipeline.name}" in names
    assert "mmalign/_demos/app.py" in names  # `mmalign demo` imports the page from there
    for template in (ROOT / "mmalign" / "rewards" / "judge_templates").iterdir():  # VLM judges read these
        assert f"mmalign/rewards/judge_templates/{template.name}" in names
    assert not any(name.startswith(("rewards/", "pipelines/", "demos/", "tests/")) for name in names)
    # the shapes world's weights ship, its training checkpoints do not
    assert "mmalign/shapes/weights/shapes-clip/open_clip_model.safetensors" in names
    assert "mmalign/shapes/weights/shapes-object/model.safetensors" in names
    for generator in ("shapes-sd", "shapes-turbo", "shapes-flow"):
        assert f"mmalign/shapes/weights/{generator}/model_index.json" in names
    assert not any(name.startswith("mmalign/shapes/weights/") and "checkpoint" in name for name in names)
    assert not any(name.endswith(".pt") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mmalign = mmalign.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
