"""A transformers ``CLIPTokenizer`` built offline from the BPE vocabulary that open_clip ships.

CLIP's tokenizer is defined by one file, ``bpe_simple_vocab_16e6.txt.gz``: its first 48,894
merges, after the 256 byte symbols and their end-of-word forms, make the 49,406 tokens, then
the two specials. open_clip names those ``<start_of_text>``/``<end_of_text>``; transformers
names them ``<|startoftext|>``/``<|endoftext|>``, and pads with the latter, as Stable Diffusion
does. transformers 5 ignores ``vocab_file=``/``merges_file=`` given to the constructor, so the
tokenizer is written to a folder and loaded with ``from_pretrained``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

MERGE_COUNT = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order of CLIP's vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def write_clip_tokenizer(directory: Path, model_max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and the tokenizer config for ``CLIPTokenizer.from_pretrained``."""
    from open_clip.tokenizer import default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : MERGE_COUNT + 1]
    symbols = byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, "bos_token": BOS,
              "eos_token": EOS, "unk_token": EOS, "pad_token": EOS, "do_lower_case": True}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=2))
    return directory
