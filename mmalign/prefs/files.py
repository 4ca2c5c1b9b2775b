"""Preference pairs from files, the forms a trainer (D3PO) reads besides the store.

- JSONL, one object a line: ``{"prompt", "left", "right", "choice"}`` with image paths relative
  to the JSONL file's folder (an animated GIF is a video) and choice ``"left"``, ``"right"`` or
  ``"tie"``; or TRL's
  ``{"prompt", "chosen", "rejected"}``, read as ``left=chosen, right=rejected, choice="left"``.
- Parquet with the same columns: images as ``datasets.Image()`` structs (``bytes``/``path``, the
  store's export) or as path strings relative to the Parquet file's folder.

Row numbers in errors count from 1; in JSONL they are line numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InvalidInputError, require
from ..rewards.inputs import load_image
from ..video_files import read_video
from .images import image_tensor_from_bytes, naming
from .store import CHOICES, PreferencePair, PreferenceStore, check_choice

FILE_SUFFIXES = (".jsonl", ".parquet")
STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
LABELLED_COLUMNS = ("prompt", "left", "right", "choice")
TRL_COLUMNS = ("prompt", "chosen", "rejected")


def read_preference_file(path) -> list[PreferencePair]:
    """Every pair in a ``.jsonl`` or ``.parquet`` file, ties included, images loaded as tensors."""
    path = Path(path)
    if path.suffix not in FILE_SUFFIXES:
        raise InvalidInputError(f"path: {str(path)!r} has an unsupported suffix; preference files are "
                                f"{' or '.join(FILE_SUFFIXES)} (a store is {', '.join(STORE_SUFFIXES)}).")
    if not path.is_file():
        raise InvalidInputError(f"path: preference file {str(path)!r} does not exist.")
    rows = _jsonl_rows(path) if path.suffix == ".jsonl" else _parquet_rows(path)
    if not rows:
        raise InvalidInputError(f"path: {str(path)!r} holds no preference pairs. Fix: one row per labelled pair "
                                f"with columns {', '.join(LABELLED_COLUMNS)}.")
    return [_pair(row, f"{path}: row {number}", path.parent) for number, row in rows]


def load_preference_pairs(source, *, include_ties: bool = False) -> list[PreferencePair]:
    """Pairs from a store (``.db``/``.sqlite``), a ``.jsonl`` or a ``.parquet`` file, chosen by the
    suffix. Ties are left out unless asked for: D3PO learns only from a preferred side."""
    path = Path(source)
    if path.suffix in STORE_SUFFIXES:
        with PreferenceStore(path, create=False) as store:
            return store.pairs(include_ties=include_ties)
    if path.suffix not in FILE_SUFFIXES:
        raise InvalidInputError(f"source: {str(path)!r} has an unsupported suffix; pass a preference store "
                                f"({', '.join(STORE_SUFFIXES)}) or a file ({', '.join(FILE_SUFFIXES)}).")
    return [pair for pair in read_preference_file(path) if include_ties or pair.choice != "tie"]


def _jsonl_rows(path: Path) -> list[tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidInputError(f"{path}: row {number}: invalid JSON ({error.msg}). "
                                        "Fix: write one JSON object per line.") from error
            if not isinstance(row, dict):
                raise InvalidInputError(f"{path}: row {number}: expected a JSON object, got {type(row).__name__}.")
            rows.append((number, row))
    return rows


def _parquet_rows(path: Path) -> list[tuple[int, dict]]:
    parquet = require("pyarrow.parquet", package="datasets")
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError and others for a bad file
        raise InvalidInputError(f"path: {str(path)!r} is not a readable Parquet file ({error}).") from error
    return list(enumerate(table.to_pylist(), 1))


def _pair(row: dict, where: str, folder: Path) -> PreferencePair:
    trl = "chosen" in row or "rejected" in row
    required = TRL_COLUMNS if trl else LABELLED_COLUMNS
    missing = [column for column in required if row.get(column) is None]
    if missing:
        raise InvalidInputError(
            f"{where}: missing {', '.join(map(repr, missing))}. Fix: each row needs {', '.join(LABELLED_COLUMNS)} "
            f"(choice one of {', '.join(map(repr, CHOICES))}), or TRL's {', '.join(TRL_COLUMNS)}.")
    if not isinstance(row["prompt"], str):
        raise InvalidInputError(f"{where}: prompt must be a string, got {type(row['prompt']).__name__}.")
    left, right = ("chosen", "rejected") if trl else ("left", "right")
    choice = "left" if trl else check_choice(row["choice"], where=f"{where}: choice")
    return PreferencePair(row["prompt"], _image(row[left], f"{where}: {left}", folder),
                          _image(row[right], f"{where}: {right}", folder), choice)


def _image(value, where: str, folder: Path):
    """A path string (relative to ``folder``) or a ``{"bytes", "path"}`` struct as ``[3,H,W]`` in [0,1];
    an animated GIF as a video, ``[T,3,H,W]``."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        try:
            return image_tensor_from_bytes(value["bytes"])
        except OSError as error:
            raise InvalidInputError(f"{where}: the embedded bytes are not an image ({error}).") from error
    if isinstance(value, dict):
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{where}: expected an image path or an image struct, got {value!r}.")
    file = folder / value
    if not file.is_file():
        raise InvalidInputError(f"{where}: image {value!r} not found (looked at {str(file)!r}). "
                                f"Fix: image paths are relative to the file's folder {str(folder)!r}.")
    with naming(where):
        if file.suffix.lower() == ".gif":
            video = read_video(file)
            return video if len(video) > 1 else video[0]
        return load_image(file)
