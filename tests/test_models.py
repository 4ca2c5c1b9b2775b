import pytest

from mmalign import models
from mmalign.errors import InvalidInputError, WeightsNotFoundError


def test_missing_shipped_weights_name_the_retrain_command(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "SHIPPED_DIR", tmp_path)
    with pytest.raises(WeightsNotFoundError, match="python -m mmalign.shapes.train shapes-sd"):
        models.resolve_model("shapes-sd")


def test_folders_hub_ids_and_nonsense(tmp_path):
    with pytest.raises(InvalidInputError, match="no model_index.json"):
        models.resolve_model(str(tmp_path))
    (tmp_path / "model_index.json").write_text("{}")
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    assert models.resolve_model("stabilityai/sd-turbo") == "stabilityai/sd-turbo"
    with pytest.raises(InvalidInputError, match="neither a shipped model"):
        models.resolve_model("not a model")
