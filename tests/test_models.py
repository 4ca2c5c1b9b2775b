import json

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


def test_shipped_models_carry_their_sampling_defaults_and_others_get_their_pipelines():
    assert models.sampling_defaults("shapes-turbo") == {"num_inference_steps": 1, "guidance_scale": 0.0}
    assert models.sampling_defaults("shapes-sd")["num_inference_steps"] == 25
    assert models.sampling_defaults("stabilityai/sd-turbo") == {}


def test_components_saved_as_absent_are_passed_as_none(tmp_path):
    index = {"_class_name": "StableDiffusion3Pipeline", "text_encoder_3": [None, None], "tokenizer_3": [None, None],
             "vae": ["diffusers", "AutoencoderKL"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    assert models.absent_components(str(tmp_path)) == {"text_encoder_3": None, "tokenizer_3": None}
    assert models.absent_components("org/hub-model") == {}
