"""Downloads from the Hugging Face Hub, with errors that say what failed and how to work offline."""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsNotFoundError

OFFLINE_FIX = "Fix: check the name and your network, or download it elsewhere and use a local path (local-dir:...)."


def download_file(repo_id: str, filename: str, revision: str | None = None) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo_id, filename, revision=revision)
    except Exception as error:  # offline, unknown repo, gated: all end the same for the user
        raise WeightsNotFoundError(f"could not download {filename} from hf-hub:{repo_id} ({type(error).__name__}). {OFFLINE_FIX}") from error


def download_repo(repo_id: str, revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except Exception as error:
        raise WeightsNotFoundError(f"could not download hf-hub:{repo_id} ({type(error).__name__}). {OFFLINE_FIX}") from error
