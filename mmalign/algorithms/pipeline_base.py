"""The base of mmalign's community pipelines: a DiffusionPipeline holding the components of any
text-to-image or text-to-video family mmalign supports (SD, SDXL, PixArt-α, SD3, Flux, Wan), so one
pipeline file serves them all. The method itself runs on the stock pipeline those components make."""

from __future__ import annotations

from diffusers import (AutoencoderKL, AutoencoderKLWan, DiffusionPipeline, FluxTransformer2DModel,
                       PixArtTransformer2DModel, SchedulerMixin, SD3Transformer2DModel, UNet2DConditionModel,
                       WanTransformer3DModel)
from transformers import ImageProcessingMixin, PreTrainedModel, PreTrainedTokenizerBase


class AnyTextToImagePipeline(DiffusionPipeline):
    """Subclass it in the pipeline file by module attribute (``pipeline_base.AnyTextToImagePipeline``):
    diffusers refuses a custom-pipeline file in which it finds two DiffusionPipeline classes."""

    _optional_components = ["text_encoder", "tokenizer", "unet", "transformer", "text_encoder_2", "tokenizer_2",
                            "text_encoder_3", "tokenizer_3", "safety_checker", "feature_extractor", "image_encoder"]

    # from_pipe carries a model over only if its exact class is in the annotation
    def __init__(self, vae: AutoencoderKL | AutoencoderKLWan, scheduler: SchedulerMixin,
                 text_encoder: PreTrainedModel | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None, unet: UNet2DConditionModel | None = None,
                 transformer: (PixArtTransformer2DModel | SD3Transformer2DModel | FluxTransformer2DModel
                               | WanTransformer3DModel | None) = None,
                 text_encoder_2: PreTrainedModel | None = None, tokenizer_2: PreTrainedTokenizerBase | None = None,
                 text_encoder_3: PreTrainedModel | None = None, tokenizer_3: PreTrainedTokenizerBase | None = None,
                 safety_checker: PreTrainedModel | None = None, feature_extractor: ImageProcessingMixin | None = None,
                 image_encoder: PreTrainedModel | None = None):
        super().__init__()
        self.register_modules(
            vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            transformer=transformer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
            text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3, safety_checker=safety_checker,
            feature_extractor=feature_extractor, image_encoder=image_encoder)

    @property
    def shows_progress(self) -> bool:
        return not getattr(self, "_progress_bar_config", {}).get("disable", False)
