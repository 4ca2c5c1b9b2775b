"""Preferences between image pairs, from people (the demo) or from rewards (simulated labels).

:class:`PreferenceStore` keeps them in one SQLite file with the images beside it; files of pairs
(JSONL, Parquet) are read with :func:`read_preference_file`; :func:`load_preference_pairs` reads
either, for trainers such as D3PO.
"""

from .files import load_preference_pairs, read_preference_file
from .store import CHOICES, PreferencePair, PreferenceRecord, PreferenceStore

__all__ = ["CHOICES", "PreferencePair", "PreferenceRecord", "PreferenceStore", "load_preference_pairs",
           "read_preference_file"]
