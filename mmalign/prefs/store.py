"""The preference store: human and simulated labels of image pairs, in one SQLite file.

Why SQLite in WAL mode: the Gradio demo, simulated labellers and trainers write and read at once,
from several processes; WAL lets readers go on while one writer commits, and every row is committed
whole or not at all. The store only ever appends: there is no path that deletes, rewrites or
"repairs" what is there, and a file that is not a store is left untouched.

Layout, for ``labels.db``: the database ``labels.db`` (plus SQLite's ``-wal``/``-shm`` companions)
and the images beside it in ``labels-images/<sha256 of the PNG>.png``. Rows hold the file name,
so the two can be moved together. Timestamps are float Unix seconds (UTC).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from ..errors import InvalidInputError, PreferenceStoreError
from ..rewards.inputs import load_image as load_image_file
from .images import as_pil_image, png_bytes, save_content_addressed

CHOICES = ("left", "right", "tie")
ADD_ARGUMENTS = ("prompt", "left", "right", "choice", "annotator", "source")
SCHEMA_VERSION = 1  # kept in PRAGMA user_version
COLUMNS = ("id", "prompt", "left_image", "right_image", "choice", "annotator", "source", "timestamp")
SCHEMA = """CREATE TABLE IF NOT EXISTS preferences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt TEXT NOT NULL,
    left_image TEXT NOT NULL,
    right_image TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie')),
    annotator TEXT NOT NULL,
    source TEXT NOT NULL,
    timestamp REAL NOT NULL
)"""


@dataclass(frozen=True)
class PreferenceRecord:
    """One labelled pair as stored. ``left``/``right`` are paths of PNG files in the store's image
    folder; ``source`` is ``"human"`` or ``"reward:<name>"``; ``timestamp`` is Unix seconds."""

    id: int
    prompt: str
    left: str
    right: str
    choice: str
    annotator: str
    source: str
    timestamp: float


@dataclass
class PreferencePair:
    """A pair ready for training (D3PO): images as float ``[3,H,W]`` tensors in [0,1]."""

    prompt: str
    left: Tensor
    right: Tensor
    choice: str

    def __repr__(self) -> str:  # the pixels would drown the label
        return (f"PreferencePair(prompt={self.prompt!r}, left=<{list(self.left.shape)}>, "
                f"right=<{list(self.right.shape)}>, choice={self.choice!r})")


def check_choice(choice, where: str = "choice") -> str:
    if choice not in CHOICES:
        raise InvalidInputError(f"{where}: got {choice!r}; the labels are {', '.join(map(repr, CHOICES))}.")
    return choice


def check_source(source) -> str:
    if not isinstance(source, str) or not (source == "human" or (source.startswith("reward:") and source[7:])):
        raise InvalidInputError(f"source: got {source!r}; use 'human' or 'reward:<reward name>' "
                                "(e.g. 'reward:shapes-clip').")
    return source


def is_lock_error(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


class PreferenceStore:
    """An append-only store of labelled image pairs at ``path`` (a ``.db`` file, created if missing
    unless ``create=False``). Each process opens its own store; one store may be shared by threads.
    A write waits up to ``timeout`` seconds for another writer, then raises
    :class:`~mmalign.errors.PreferenceStoreError`."""

    def __init__(self, path, *, timeout: float = 30.0, create: bool = True):
        self.path = Path(path)
        self.images_dir = self.path.parent / f"{self.path.stem}-images"
        self.timeout = timeout
        if self.path.is_dir():
            raise InvalidInputError(f"path: {str(self.path)!r} is a folder; pass the store's .db file.")
        if not self.path.exists():
            if not create:
                raise InvalidInputError(f"path: preference store {str(self.path)!r} does not exist. "
                                        "Fix: check the path; stores are created by labelling (PreferenceStore.add).")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            self._connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            empty = self._retrying(self._check_schema)  # reads only: a file that is not ours stays untouched
            mode = self._retrying(lambda: self._connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise PreferenceStoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r}). "
                                           "Fix: put the store on a local file system.")
            self._connection.execute("PRAGMA synchronous = FULL")  # a committed label survives a power cut
            if empty:
                self._retrying(self._create_schema)
        except BaseException:
            self._connection.close()
            raise

    # -- opening ------------------------------------------------------------------------------

    def _check_schema(self) -> bool:
        """Whether the file is an empty database to make a store in; raise unless it is that or a
        store of this schema."""
        version = self._connection.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in self._connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        if version > SCHEMA_VERSION:
            raise PreferenceStoreError(f"{self.path}: written by a newer mmalign (schema {version}, this one "
                                       f"reads {SCHEMA_VERSION}). Fix: pip install -U mmalign.")
        if not tables and version == 0:
            return True
        columns = tuple(row[1] for row in self._connection.execute("PRAGMA table_info(preferences)"))
        if version != SCHEMA_VERSION or columns != COLUMNS:
            found = ", ".join(sorted(tables)) or "none"
            raise PreferenceStoreError(
                f"{self.path}: a SQLite database, but not a preference store (tables: {found}); it was left "
                "untouched. Fix: pass a store's .db file, or a new file name to start one.")
        return False

    def _create_schema(self) -> None:
        with self._transaction() as connection:  # IF NOT EXISTS: another process may have just made it
            connection.execute(SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _transaction(self):
        return _WriteTransaction(self._connection)

    def _retrying(self, operation):
        """Run ``operation``, retrying while another process holds the write lock, up to the timeout
        (SQLite's busy handler waits inside each try; this covers the cases it returns at once).
        A file SQLite cannot read is reported, never repaired."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return operation()
            except sqlite3.DatabaseError as error:
                if type(error) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
                    raise PreferenceStoreError(
                        f"{self.path}: not a readable SQLite database ({error}); it was left untouched. Fix: pass "
                        "the .db file of a preference store, or a new file name to start one; restore a damaged "
                        "store from a backup.") from error
                if not (isinstance(error, sqlite3.OperationalError) and is_lock_error(error)):
                    raise
                if time.monotonic() >= deadline:
                    raise PreferenceStoreError(
                        f"{self.path}: locked by another process for over {self.timeout:g} s ({error}). "
                        "Fix: wait for the other writer to finish (or stop it), or open the store with a "
                        "longer `timeout=`.") from error
                time.sleep(0.05)

    # -- writing ------------------------------------------------------------------------------

    def add(self, prompt: str, left, right, choice: str, annotator: str = "anonymous", source: str = "human") -> int:
        """Store one labelled pair and return its row id. ``left``/``right``: a float ``[3,H,W]``
        tensor in [0,1], a PIL image or an image path, saved as PNG before the row is committed."""
        return self.add_many([dict(prompt=prompt, left=left, right=right, choice=choice,
                                   annotator=annotator, source=source)])[0]

    def add_many(self, pairs: Iterable[Mapping]) -> list[int]:
        """Store many pairs (mappings with ``add``'s argument names) in one transaction; all or none."""
        rows = []
        for index, pair in enumerate(pairs):
            keys = set(pair) if isinstance(pair, Mapping) else set()
            missing, unknown = {"prompt", "left", "right", "choice"} - keys, keys - {*ADD_ARGUMENTS}
            if missing or unknown:
                raise InvalidInputError(
                    f"pairs[{index}]: expected a mapping with add()'s argument names ({', '.join(ADD_ARGUMENTS)}); "
                    f"missing {sorted(missing)}, unknown {sorted(unknown)}.")
            rows.append(self._prepare(**pair))
        self._write_images(rows)
        return self._retrying(lambda: self._insert(rows))

    def _prepare(self, prompt, left, right, choice, annotator="anonymous", source="human") -> dict:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"prompt: expected a string, got {type(prompt).__name__}.")
        if not isinstance(annotator, str) or not annotator:
            raise InvalidInputError(f"annotator: expected a non-empty string, got {annotator!r}.")
        images = {side: png_bytes(as_pil_image(image, side)) for side, image in (("left", left), ("right", right))}
        return dict(prompt=prompt, images=images, choice=check_choice(choice), annotator=annotator,
                    source=check_source(source))

    def _write_images(self, rows: list[dict]) -> None:
        """Images first: a committed row must never point at a missing file."""
        for row in rows:
            for side, data in row.pop("images").items():
                row[f"{side}_image"] = save_content_addressed(data, self.images_dir).name

    def _insert(self, rows: list[dict]) -> list[int]:
        ids, now = [], time.time()
        with self._lock, self._transaction() as connection:
            for row in rows:
                cursor = connection.execute(
                    "INSERT INTO preferences (prompt, left_image, right_image, choice, annotator, source, timestamp) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (row["prompt"], row["left_image"], row["right_image"], row["choice"], row["annotator"],
                     row["source"], now))
                ids.append(cursor.lastrowid)
        return ids

    # -- reading ------------------------------------------------------------------------------

    def _query(self, sql: str, parameters=()) -> list[tuple]:
        def run():
            with self._lock:
                return self._connection.execute(sql, parameters).fetchall()
        return self._retrying(run)

    def records(self, include_ties: bool = True) -> list[PreferenceRecord]:
        """Every stored pair in the order it was added."""
        where = "" if include_ties else "WHERE choice != 'tie'"
        rows = self._query(f"SELECT {', '.join(COLUMNS)} FROM preferences {where} ORDER BY id")
        return [PreferenceRecord(row_id, prompt, str(self.images_dir / left), str(self.images_dir / right), choice,
                                 annotator, source, timestamp)
                for row_id, prompt, left, right, choice, annotator, source, timestamp in rows]

    def pairs(self, include_ties: bool = False) -> list[PreferencePair]:
        """The stored pairs with their images loaded; ties are left out unless asked for (D3PO cannot
        learn from them)."""
        return [PreferencePair(r.prompt, self.load_image(r.left), self.load_image(r.right), r.choice)
                for r in self.records(include_ties=include_ties)]

    def __len__(self) -> int:
        return self._query("SELECT COUNT(*) FROM preferences")[0][0]

    def stats(self) -> dict:
        """Totals: ``total``, ``prompts`` (distinct), and counts ``by_choice``, ``by_source``, ``by_annotator``."""
        rows = self._query("SELECT prompt, choice, source, annotator FROM preferences")
        by_choice = {choice: 0 for choice in CHOICES}
        by_choice.update(Counter(row[1] for row in rows))
        return {"total": len(rows), "prompts": len({row[0] for row in rows}), "by_choice": by_choice,
                "by_source": dict(Counter(row[2] for row in rows).most_common()),
                "by_annotator": dict(Counter(row[3] for row in rows).most_common())}

    def load_image(self, path) -> Tensor:
        """A stored image (a record's ``left``/``right``, or its bare file name) as ``[3,H,W]`` in [0,1]."""
        path = Path(path)
        if not path.is_file() and (self.images_dir / path.name).is_file():
            path = self.images_dir / path.name
        if not path.is_file():
            raise InvalidInputError(f"path: image {str(path)!r} is not in the store's folder {str(self.images_dir)!r}.")
        return load_image_file(path)

    def export_parquet(self, path) -> Path:
        """Write every record to a Parquet file that ``datasets.load_dataset("parquet", ...)`` reads
        with ``left``/``right`` as ``datasets.Image()`` columns; written atomically."""
        from .export import export_records

        return export_records(self.records(), path)

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PreferenceStore({str(self.path)!r})"


class _WriteTransaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``: takes the write lock up front, so two writers never both
    read and then deadlock on upgrading; rolls back on any error."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                self.connection.execute("COMMIT")
        finally:  # an error, or a COMMIT that failed: leave no transaction open for the next try
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")


__all__ = ["CHOICES", "PreferencePair", "PreferenceRecord", "PreferenceStore", "check_choice", "check_source"]
