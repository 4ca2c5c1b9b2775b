"""The preference store: round trips, content addressing, WAL, many writers, a held lock, files that
are not stores, and the `mmalign prefs` commands."""

import json
import multiprocessing
import sqlite3
from pathlib import Path

import datasets
import numpy
import pytest
import torch
from PIL import Image

from mmalign.errors import InvalidInputError, PreferenceStoreError
from mmalign.prefs import PreferenceStore
from mmalign.cli import main
from prefs_toys import add_from_a_process, grid_image
from test_cli import mmalign


def test_round_trip_keeps_labels_and_exact_pixels(store_path):
    left, right = grid_image(0), grid_image(1)
    store = PreferenceStore(store_path)
    first = store.add("a red circle", left, right, "left", annotator="ana")
    second = store.add("a blue square", right, left, "tie", source="reward:shapes-clip")
    assert (first, second) == (1, 2) and len(store) == 2
    records = store.records()
    assert [(r.id, r.prompt, r.choice, r.annotator, r.source) for r in records] == [
        (1, "a red circle", "left", "ana", "human"), (2, "a blue square", "tie", "anonymous", "reward:shapes-clip")]
    assert torch.equal(store.load_image(records[0].left), left) and torch.equal(store.load_image(records[0].right), right)
    assert records[1].left == records[0].right and records[0].timestamp <= records[1].timestamp
    assert [r.id for r in store.records(include_ties=False)] == [1]
    assert [p.choice for p in store.pairs()] == ["left"] and len(store.pairs(include_ties=True)) == 2


def test_float_images_are_quantised_to_the_nearest_8_bit_level(store_path):
    image = torch.rand(3, 4, 4)
    store = PreferenceStore(store_path)
    store.add("p", image, image, "right")
    assert torch.equal(store.load_image(store.records()[0].left), (image * 255).round() / 255)


def test_same_image_from_a_tensor_a_pil_image_or_a_path_is_one_file(store_path, tmp_path):
    image = grid_image(2)
    pil = Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy())
    pil.save(tmp_path / "same.png")
    store = PreferenceStore(store_path)
    store.add("p", image, pil, "left")
    store.add("p", tmp_path / "same.png", grid_image(3), "right")
    files = sorted(store.images_dir.iterdir())
    assert len(files) == 2 and all(len(f.stem) == 64 and f.suffix == ".png" for f in files)
    assert store.images_dir == store_path.parent / "prefs-images"


def test_store_is_in_wal_mode_with_a_schema_version(store_path):
    PreferenceStore(store_path).close()
    with sqlite3.connect(store_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1


def test_add_many_is_one_transaction(store_path):
    store = PreferenceStore(store_path)
    pairs = [dict(prompt=f"p{i}", left=grid_image(i), right=grid_image(i + 1), choice="left") for i in range(3)]
    assert store.add_many(pairs) == [1, 2, 3]
    with pytest.raises(InvalidInputError, match="choice"):
        store.add_many([*pairs, dict(prompt="p", left=grid_image(0), right=grid_image(1), choice="best")])
    assert len(store) == 3


@pytest.mark.parametrize("changes, message", [
    ({"choice": "better"}, "choice: got 'better'; the labels are 'left', 'right', 'tie'"),
    ({"prompt": 3}, "prompt: expected a string"),
    ({"left": torch.rand(1, 3, 4, 4)}, "left: expected one image [3,H,W]"),
    ({"right": torch.rand(3, 4, 4) * 255}, "right: values reach"),
    ({"right": torch.full((3, 2, 2), float("nan"))}, "right: contains NaN"),
    ({"left": "missing.png"}, "left: 'missing.png' does not exist"),
    ({"left": [1, 2]}, "left: expected a float tensor"),
    ({"source": "shapes-clip"}, "source: got 'shapes-clip'; use 'human' or 'reward:<reward name>'"),
    ({"annotator": ""}, "annotator: expected a non-empty string"),
])
def test_bad_input_names_the_argument_and_stores_nothing(changes, message, store_path):
    store = PreferenceStore(store_path)
    arguments = dict(prompt="p", left=grid_image(0), right=grid_image(1), choice="left") | changes
    with pytest.raises(InvalidInputError) as raised:
        store.add(**arguments)
    assert message in str(raised.value)
    assert len(store) == 0


def test_eight_processes_writing_at_once_lose_nothing(store_path):
    PreferenceStore(store_path).close()
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        ids = pool.starmap(add_from_a_process, [(str(store_path), worker, 50) for worker in range(8)])
    store = PreferenceStore(store_path)
    records = store.records()
    assert len(store) == len(records) == 400
    assert sorted(r.id for r in records) == sorted(i for worker in ids for i in worker) == list(range(1, 401))
    assert all(Path(r.left).is_file() and Path(r.right).is_file() for r in records)
    assert store.stats()["by_annotator"] == {f"w{worker}": 50 for worker in range(8)}


def test_a_held_write_lock_gives_a_clear_error_and_keeps_the_rows(store_path):
    store = PreferenceStore(store_path)
    store.add_many([dict(prompt="p", left=grid_image(i), right=grid_image(i + 1), choice="right") for i in range(3)])
    locker = sqlite3.connect(store_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        waiting = PreferenceStore(store_path, timeout=0.2)
        with pytest.raises(PreferenceStoreError, match="locked by another process .*Fix: wait"):
            waiting.add("p", grid_image(7), grid_image(8), "left")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert [r.id for r in store.records()] == [1, 2, 3]
    assert waiting.add("p", grid_image(7), grid_image(8), "left") == 4


def test_a_file_that_is_not_a_store_is_refused_and_left_byte_for_byte(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(bytes(range(256)) * 16)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    connection.close()
    for path, message in [(garbage, "not a readable SQLite database"), (foreign, "not a preference store")]:
        before = path.read_bytes()
        with pytest.raises(PreferenceStoreError, match=message) as raised:
            PreferenceStore(path)
        assert str(path) in str(raised.value) and "left untouched" in str(raised.value)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(path.stem)) == [path.name]


def test_a_damaged_store_is_reported_not_repaired(store_path):
    with PreferenceStore(store_path) as store:
        store.add_many([dict(prompt="p" * 3000, left=grid_image(i), right=grid_image(i + 1), choice="left")
                        for i in range(4)])
    damaged = bytearray(store_path.read_bytes())
    damaged[4096:8192] = bytes(range(256)) * 16  # the second page: the table's root
    store_path.write_bytes(damaged)
    with pytest.raises(PreferenceStoreError, match="not a readable SQLite database.*left untouched"):
        PreferenceStore(store_path).records()
    assert store_path.read_bytes() == damaged


def test_a_store_from_a_newer_schema_is_refused(store_path):
    PreferenceStore(store_path).close()
    with sqlite3.connect(store_path) as connection:
        connection.execute("PRAGMA user_version = 2")
    connection.close()
    with pytest.raises(PreferenceStoreError, match="newer mmalign"):
        PreferenceStore(store_path)


def test_a_missing_store_is_created_unless_only_reading(store_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        PreferenceStore(store_path, create=False)
    assert not store_path.parent.exists()
    with PreferenceStore(store_path) as store:
        assert len(store) == 0 and store_path.is_file()


def test_export_loads_in_datasets_with_images(store_path, tmp_path):
    store = PreferenceStore(store_path)
    store.add("a red circle", grid_image(0), grid_image(1), "left", annotator="ana")
    store.add("a blue square", grid_image(2), grid_image(3), "tie", source="reward:shapes-clip")
    exported = store.export_parquet(tmp_path / "out" / "prefs.parquet")
    loaded = datasets.load_dataset("parquet", data_files=str(exported), split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(loaded.features["left"], datasets.Image) and isinstance(loaded.features["right"], datasets.Image)
    assert loaded["choice"] == ["left", "tie"] and loaded["prompt"] == ["a red circle", "a blue square"]
    assert loaded["source"] == ["human", "reward:shapes-clip"] and loaded["annotator"] == ["ana", "anonymous"]
    assert isinstance(loaded[0]["left"], Image.Image) and loaded[0]["left"].size == (5, 6)
    pixels = torch.tensor(numpy.asarray(loaded[1]["right"])).permute(2, 0, 1) / 255
    assert torch.equal(pixels, grid_image(3))


def test_cli_stats_and_export(store_path, tmp_path, capsys):
    store = PreferenceStore(store_path)
    store.add("a", grid_image(0), grid_image(1), "left", annotator="ana")
    store.add("a", grid_image(0), grid_image(2), "right", source="reward:shapes-clip", annotator="bot")
    stats = mmalign("prefs", "stats", store_path, "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) | {"store": None} == {
        "store": None, "total": 2, "prompts": 1, "by_choice": {"left": 1, "right": 1, "tie": 0},
        "by_source": {"human": 1, "reward:shapes-clip": 1}, "by_annotator": {"ana": 1, "bot": 1}}
    assert main(["prefs", "stats", str(store_path)]) == 0  # the table, in process: one subprocess less
    table = capsys.readouterr().out
    assert table.startswith("2 pairs over 1 prompts") and "reward:shapes-clip" in table and "bot" in table
    output = tmp_path / "prefs.parquet"
    exported = mmalign("prefs", "export", store_path, "--output", output, "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["records"] == 2 and output.is_file()


@pytest.mark.parametrize("args, message", [
    (["stats", "missing.db"], "STORE: 'missing.db' does not exist"),
    (["export", "{store}", "--output", "out.csv"], "--output: export to a .parquet file"),
])
def test_cli_errors_are_one_line(args, message, store_path, tmp_path):
    PreferenceStore(store_path).close()
    result = mmalign("prefs", *[a.format(store=store_path) for a in args], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mmalign prefs: error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "missing.db").exists()
