"""A preference store as a Hugging Face dataset: one Parquet file, images embedded.

Why Parquet with the ``datasets`` features metadata: ``datasets.load_dataset("parquet", ...)`` and
the Hub viewer then show ``left``/``right`` as images, and the file carries the PNG bytes, so it
stands alone without the store's image folder.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidInputError, require
from ..storage import atomic_write

def export_records(records, path) -> Path:
    """Write ``records`` (:class:`~mmalign.prefs.PreferenceRecord`) to ``path`` atomically.

    Columns: ``id`` (int64), ``prompt``, ``left``/``right`` (``datasets.Image()``: PNG bytes plus the
    store's file name as ``path``), ``choice``, ``annotator``, ``source`` (strings), ``timestamp``
    (float64 Unix seconds)."""
    datasets = require("datasets", package="datasets")
    path = Path(path)
    if path.suffix != ".parquet":
        raise InvalidInputError(f"path: export to a .parquet file, got {str(path)!r}.")
    text = datasets.Value("string")
    features = datasets.Features({"id": datasets.Value("int64"), "prompt": text, "left": datasets.Image(),
                                  "right": datasets.Image(), "choice": text, "annotator": text, "source": text,
                                  "timestamp": datasets.Value("float64")})
    columns = {name: [getattr(record, name) for record in records] for name in features}
    for side in ("left", "right"):
        columns[side] = [{"bytes": Path(file).read_bytes(), "path": Path(file).name} for file in columns[side]]
    dataset = datasets.Dataset.from_dict(columns, features=features)
    showing_progress = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar for one fast write is noise on the command line
    try:
        atomic_write(path, lambda temporary: dataset.to_parquet(temporary))
    finally:
        if showing_progress:
            datasets.enable_progress_bars()
    return path
