"""Preference pairs from JSONL and Parquet files, and the one loader that reads stores and files;
each bad file names itself, the row and the fix."""

import json

import pyarrow
import pyarrow.parquet
import pytest
import torch
from PIL import Image

from mmalign.errors import InvalidInputError
from mmalign.prefs import PreferenceStore, load_preference_pairs, read_preference_file
from prefs_toys import grid_image


def save_png(image: torch.Tensor, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(path)
    return path


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def images(tmp_path):
    """Three PNGs in tmp_path/images, named a, b, c."""
    return {name: save_png(grid_image(seed), tmp_path / "images" / f"{name}.png") for seed, name in enumerate("abc")}


def test_jsonl_with_paths_relative_to_the_file(tmp_path, images):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "a red circle", "left": "images/a.png", "right": "images/b.png", "choice": "right"},
        "",
        {"prompt": "a blue square", "left": "images/c.png", "right": str(images["a"]), "choice": "tie"},
    ])
    pairs = read_preference_file(path)
    assert [(p.prompt, p.choice) for p in pairs] == [("a red circle", "right"), ("a blue square", "tie")]
    assert torch.equal(pairs[0].left, grid_image(0)) and torch.equal(pairs[0].right, grid_image(1))
    assert torch.equal(pairs[1].right, grid_image(0))
    assert [p.choice for p in load_preference_pairs(path)] == ["right"]  # ties left out for training
    assert len(load_preference_pairs(str(path), include_ties=True)) == 2


def test_trl_chosen_and_rejected_read_as_left_preferred(tmp_path, images):
    path = write_jsonl(tmp_path / "trl.jsonl", [{"prompt": "p", "chosen": "images/b.png", "rejected": "images/a.png"}])
    (pair,) = read_preference_file(path)
    assert pair.choice == "left" and torch.equal(pair.left, grid_image(1)) and torch.equal(pair.right, grid_image(0))


def test_parquet_from_a_store_export_and_with_path_columns(tmp_path, store_path, images):
    store = PreferenceStore(store_path)
    store.add("a", grid_image(0), grid_image(1), "left")
    store.add("b", grid_image(2), grid_image(0), "tie")
    exported = store.export_parquet(tmp_path / "export.parquet")
    from_export = read_preference_file(exported)
    from_store = store.pairs(include_ties=True)
    assert [(p.prompt, p.choice) for p in from_export] == [(p.prompt, p.choice) for p in from_store]
    assert all(torch.equal(e.left, s.left) and torch.equal(e.right, s.right) for e, s in zip(from_export, from_store))
    assert [p.prompt for p in load_preference_pairs(store_path)] == ["a"]
    path_columns = tmp_path / "paths.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"prompt": ["c"], "left": ["images/c.png"], "right": ["images/a.png"],
                                               "choice": ["right"]}), path_columns)
    (pair,) = read_preference_file(path_columns)
    assert pair.choice == "right" and torch.equal(pair.left, grid_image(2))


GOOD = {"prompt": "p", "left": "images/a.png", "right": "images/b.png", "choice": "left"}


@pytest.mark.parametrize("rows, message", [
    ([GOOD, GOOD | {"right": "images/gone.png"}], "row 2: right: image 'images/gone.png' not found"),
    ([GOOD, GOOD | {"choice": "both"}], "row 2: choice: got 'both'; the labels are 'left', 'right', 'tie'"),
    ([{k: v for k, v in GOOD.items() if k != "choice"}], "row 1: missing 'choice'. Fix: each row needs"),
    ([GOOD, GOOD, '{"prompt": "p", "left": '], "row 3: invalid JSON"),
    ([GOOD, "[1, 2]"], "row 2: expected a JSON object"),
    ([GOOD | {"prompt": 7}], "row 1: prompt must be a string"),
])
def test_bad_jsonl_names_the_file_and_row(rows, message, tmp_path, images):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InvalidInputError) as raised:
        read_preference_file(path)
    assert message in str(raised.value) and str(path) in str(raised.value)


def test_bad_parquet_names_the_file_and_row(tmp_path, images):
    path = tmp_path / "bad.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"prompt": ["p", "q"], "left": ["images/a.png"] * 2,
                                               "right": ["images/b.png", "images/gone.png"]}), path)
    with pytest.raises(InvalidInputError, match=r"bad.parquet: row 1: missing 'choice'"):
        read_preference_file(path)
    pyarrow.parquet.write_table(pyarrow.table({"prompt": ["p", "q"], "left": ["images/a.png"] * 2, "choice": ["left"] * 2,
                                               "right": ["images/b.png", "images/gone.png"]}), path)
    with pytest.raises(InvalidInputError, match=r"bad.parquet: row 2: right: image 'images/gone.png' not found"):
        read_preference_file(path)
    path.write_text("not parquet")
    with pytest.raises(InvalidInputError, match="is not a readable Parquet file"):
        read_preference_file(path)


def test_empty_missing_and_unsupported_files(tmp_path):
    empty = write_jsonl(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(InvalidInputError, match="empty.jsonl' holds no preference pairs"):
        read_preference_file(empty)
    with pytest.raises(InvalidInputError, match="missing.jsonl' does not exist"):
        read_preference_file(tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInputError, match=r"unsupported suffix; preference files are \.jsonl or \.parquet"):
        read_preference_file(tmp_path / "pairs.csv")
    with pytest.raises(InvalidInputError, match="source: .*unsupported suffix; pass a preference store"):
        load_preference_pairs(tmp_path / "pairs.csv")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_preference_pairs(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
