"""MolmoAct as a vLLM model: vLLM's Molmo2 layers, this package's preprocessing and prompt layout.

MolmoAct's vision tower (ViT, 2x2 attention pooling whose query is the mean of its 4 slots, SwiGLU
projector) and its Qwen2-style LLM are Molmo2's modules with the same parameter names, so the model class
subclasses vLLM's ``Molmo2ForConditionalGeneration`` and reuses its layers and its checkpoint name mapping
(``model.transformer.blocks.*`` -> ``model.layers.*``, fused ``att_proj`` / ``ff_proj`` as they are). What
differs, and is done here:

* **Configuration**: the native :class:`~molmoact_ros.model.MolmoActConfig` (``config.json`` as released)
  is read as it is; :func:`adapt_config` adds the three fields Molmo2's constructor asks for and rejects
  variants whose modules Molmo2 does not have (class token, padding embeddings: the O variant).
* **Image features are added to the** ``<im_patch>`` **embeddings** (MolmoAct) instead of replacing them
  (Molmo2); only ``<im_patch>`` positions are multimodal, the layout tokens embed as text.
* **Preprocessing and prompt** come from :class:`~molmoact_ros.model.processing.MolmoActProcessor` (the
  checkpoint's own processor files): the prompt is ``BOS + image tokens + text`` exactly as the native
  processor builds it. A request's text (or token ids) is the native processor's text (the chat framing,
  then any answer so far), without BOS; the image tokens are inserted after BOS.
* **One multimodal item is one observation**: a bare image (single-image mode, as the native processor
  treats a bare image) or a *tuple* of views (multi-image mode: ``Image 1`` ... labels, at most
  :data:`MAX_VIEWS`), ``multi_modal_data={'image': (primary, wrist)}``. The views of an observation are one
  item because they are not independent: for every view after the first, the released preprocessing
  offsets the pooling indices' padding entries too, so they read the previous view's last patch. One
  observation per prompt.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from vllm.config import VllmConfig
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageProcessorItems, MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (BaseMultiModalProcessor, BaseProcessingInfo, PromptIndexTargets,
                                        PromptInsertion, PromptUpdate, PromptUpdateDetails)
from vllm.multimodal.processing.dummy_inputs import BaseDummyInputsBuilder
from vllm.model_executor.models.molmo2 import Molmo2ForConditionalGeneration

from ..model.configuration import MolmoActConfig
from ..model.processing import MolmoActProcessor

#: Most views (cameras) in one observation: the primary view and a wrist view.
MAX_VIEWS = 2

View = Union[np.ndarray, Image.Image]
Observation = Union[View, Tuple[View, ...]]


def adapt_config(config: MolmoActConfig) -> MolmoActConfig:
    """Give a native MolmoAct config the fields vLLM's Molmo2 modules read (in place; idempotent) and
    reject what they cannot run. Returns ``config``."""
    if not isinstance(config, MolmoActConfig):
        raise TypeError(f'expected a MolmoActConfig (model_type "molmoact"), got {type(config).__name__}')
    vit, adapter, llm = config.vit_config, config.adapter_config, config.llm_config
    unsupported = []
    if vit.use_cls_token:
        unsupported.append('vit_config.use_cls_token')
    if vit.pre_layernorm:
        unsupported.append('vit_config.pre_layernorm')
    if not vit.patch_bias:
        unsupported.append('vit_config.patch_bias=false')
    if adapter.image_padding_embed is not None:
        unsupported.append(f'adapter_config.image_padding_embed={adapter.image_padding_embed!r}')
    if adapter.hidden_act != 'silu' or llm.hidden_act != 'silu':
        unsupported.append('a hidden_act other than silu in the adapter or the LLM')
    if vit.head_dim * vit.num_attention_heads != vit.hidden_size:
        unsupported.append('ViT head_dim * heads != width')
    if unsupported:
        raise NotImplementedError('MolmoAct on vLLM supports the D variant (SigLIP2 + Qwen2) layout; this '
                                  f'checkpoint has {", ".join(unsupported)}')
    # MolmoAct's pooling query is the plain mean of the 4 slots (padding slots zeroed, not masked).
    adapter.pooling_attention_mask = False
    llm.rope_scaling_layers = None
    if not getattr(llm, 'rope_parameters', None):
        llm.rope_parameters = {'rope_type': 'default', 'rope_theta': float(llm.rope_theta)}
    return config


@functools.lru_cache(maxsize=4)
def load_processor(path: str) -> MolmoActProcessor:
    """The checkpoint's native processor (tokenizer, preprocessor_config.json, processor_config.json)."""
    return MolmoActProcessor.from_pretrained(path)


def _as_view(value: Any) -> View:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 3 and value.shape[2] == 3 and value.dtype == np.uint8:
        return value
    raise ValueError('a MolmoAct view is a PIL image or an RGB uint8 array (H, W, 3), got '
                     f'{getattr(value, "dtype", type(value).__name__)} {getattr(value, "shape", "")}')


def as_observation(value: Any) -> Observation:
    """Validate one multimodal item: a bare view, or a tuple of 1..MAX_VIEWS views."""
    if isinstance(value, tuple):
        if not 1 <= len(value) <= MAX_VIEWS:
            raise ValueError(f'an observation has 1 to {MAX_VIEWS} views, got {len(value)}')
        return tuple(_as_view(v) for v in value)
    return _as_view(value)


class MolmoActDataParser(MultiModalDataParser):
    """``image`` data: one observation (a view, or a tuple of views) or a list of observations."""

    def _parse_image_data(self, data):
        if data is None:
            return None
        if self.is_embeddings(data):
            raise ValueError('MolmoAct on vLLM takes images, not precomputed embeddings')
        items = data if isinstance(data, list) else [data]
        return ImageProcessorItems([as_observation(item) for item in items])


class MolmoActProcessingInfo(BaseProcessingInfo):

    def get_hf_processor(self, **kwargs: object) -> MolmoActProcessor:
        return load_processor(str(self.ctx.model_config.model))

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {}  # the checkpoint's processor settings apply; no per-request options

    def get_supported_mm_limits(self) -> Mapping[str, Optional[int]]:
        return {'image': 1}

    def get_data_parser(self) -> MultiModalDataParser:
        return MolmoActDataParser(expected_hidden_size=self._get_expected_hidden_size())

    @functools.cached_property
    def largest_observation(self) -> Observation:
        """The observation with the most image tokens (vLLM profiles memory and the encoder budget with
        it): one view at ``max_crops``, or MAX_VIEWS views at ``max_multi_image_crops``, whichever is
        longer."""
        processor = self.get_hf_processor()
        cfg = processor.image_processor.config
        window, margin = cfg.crop_window_pixels, cfg.margin_pixels

        def views_for(max_crops: int) -> List[np.ndarray]:
            return [np.zeros((rows * window + margin, cols * window + margin, 3), dtype=np.uint8)
                    for rows in range(1, max_crops + 1) for cols in range(1, max_crops // rows + 1)]

        def length(observation: Observation) -> int:
            return len(observation_prompt_tokens(processor, observation))

        single = max(views_for(cfg.max_crops), key=length)
        multi = max(views_for(cfg.max_multi_image_crops), key=lambda v: length((v,)))
        return max([single, (multi,) * MAX_VIEWS], key=length)


def observation_inputs(processor: MolmoActProcessor, observation: Observation):
    """Native preprocessing of one observation (a bare view: single-image mode; a tuple: a list of views,
    multi-image mode unless the checkpoint's processor_config.json says otherwise)."""
    return processor.preprocess_images(list(observation) if isinstance(observation, tuple) else observation)


def observation_prompt_tokens(processor: MolmoActProcessor, observation: Observation, inputs=None) -> List[int]:
    """The token ids the native processor puts between BOS and the text for this observation."""
    inputs = observation_inputs(processor, observation) if inputs is None else inputs
    ids: List[int] = []
    for segment in inputs.prompt_segments(processor.image_token_ids, processor.settings.use_col_tokens):
        ids.extend(processor.encode_text(segment) if isinstance(segment, str) else segment.tolist())
    return ids


class MolmoActDummyInputsBuilder(BaseDummyInputsBuilder[MolmoActProcessingInfo]):

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return ''

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options=None):
        return {'image': [self.info.largest_observation] * mm_counts.get('image', 0)}


class MolmoActMultiModalProcessor(BaseMultiModalProcessor[MolmoActProcessingInfo]):
    """Native preprocessing per observation; image tokens inserted after BOS."""

    def _postprocess_prompt(self, prompt: list[int]) -> list[int]:
        bos = self.info.get_hf_processor().token_ids.bos
        return prompt if prompt[:1] == [bos] else [bos] + list(prompt)

    def _apply_hf_processor_main(self, mm_items: MultiModalDataItems,
                                 hf_kwargs: Mapping[str, object]) -> BatchFeature:
        if 'image' not in mm_items or not mm_items['image']:
            return BatchFeature()
        processor = self.info.get_hf_processor()
        observations = mm_items.get_items('image', ImageProcessorItems)
        pixels, pooling, crops, pooled, tokens, n_tokens = [], [], [], [], [], []
        for index in range(len(observations)):
            observation = observations.get(index)
            inputs = observation_inputs(processor, observation)
            ids = observation_prompt_tokens(processor, observation, inputs)
            pixels.append(inputs.images)
            pooling.append(inputs.pooled_patches_idx)
            crops.append(inputs.images.shape[0])
            pooled.append(inputs.pooled_patches_idx.shape[0])
            tokens.extend(ids)
            n_tokens.append(len(ids))
        n_crops = torch.tensor(crops, dtype=torch.long)
        return BatchFeature({
            'pixel_values': torch.from_numpy(np.concatenate(pixels)),
            'image_token_pooling': torch.from_numpy(np.concatenate(pooling)),
            'image_num_crops': n_crops,
            'image_num_pooled_patches': torch.tensor(pooled, dtype=torch.long),
            'image_num_patches': n_crops * int(pixels[0].shape[1]),
            'image_prompt_tokens': torch.tensor(tokens, dtype=torch.long),
            'image_num_prompt_tokens': torch.tensor(n_tokens, dtype=torch.long),
        })

    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]) -> Mapping[str, MultiModalFieldConfig]:
        empty = torch.empty(0, dtype=torch.long)
        return dict(
            pixel_values=MultiModalFieldConfig.flat_from_sizes('image', hf_inputs.get('image_num_crops', empty)),
            image_token_pooling=MultiModalFieldConfig.flat_from_sizes(
                'image', hf_inputs.get('image_num_pooled_patches', empty)),
            image_num_crops=MultiModalFieldConfig.batched('image', keep_on_cpu=True),
            image_num_pooled_patches=MultiModalFieldConfig.batched('image', keep_on_cpu=True),
            image_num_patches=MultiModalFieldConfig.batched('image', keep_on_cpu=True),
            image_prompt_tokens=MultiModalFieldConfig.flat_from_sizes(
                'image', hf_inputs.get('image_num_prompt_tokens', empty), keep_on_cpu=True),
            image_num_prompt_tokens=MultiModalFieldConfig.batched('image', keep_on_cpu=True),
        )

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        ids = self.info.get_hf_processor().token_ids

        def insertion(item_idx: int) -> PromptUpdateDetails:
            tokens = out_mm_kwargs['image'][item_idx]['image_prompt_tokens'].data.tolist()
            return PromptUpdateDetails.select_token_id(tokens, embed_token_id=ids.image_patch)

        return [PromptInsertion(modality='image', target=PromptIndexTargets.prefix([ids.bos]),
                                insertion=insertion)]


@MULTIMODAL_REGISTRY.register_processor(MolmoActMultiModalProcessor, info=MolmoActProcessingInfo,
                                        dummy_inputs=MolmoActDummyInputsBuilder)
class VllmMolmoActForActionReasoning(Molmo2ForConditionalGeneration):
    """MolmoAct on vLLM (architecture ``MolmoActForActionReasoning``): Molmo2's modules and weight mapping,
    MolmoAct's configuration, preprocessing and image-feature merge."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> Optional[str]:
        if modality.startswith('image'):
            return None  # the image tokens are inserted after BOS, not at a placeholder in the text
        raise ValueError('MolmoAct takes images only')

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = '') -> None:
        config = adapt_config(vllm_config.model_config.hf_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.image_patch_id = int(config.image_patch_id)

    def _parse_and_validate_image_input(self, **kwargs: object) -> Optional[dict]:
        pixel_values = kwargs.pop('pixel_values', None)
        if pixel_values is None:
            return None
        pooling = kwargs.pop('image_token_pooling')
        num_pooled = kwargs.pop('image_num_pooled_patches')
        num_patches = kwargs.pop('image_num_patches')
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.cat(list(pixel_values))
        if isinstance(pooling, (list, tuple)):
            pooling = torch.cat(list(pooling))
        num_pooled = torch.as_tensor(num_pooled).reshape(-1)
        num_patches = torch.as_tensor(num_patches).reshape(-1)
        # Each observation's pooling indices point into its own crops: shift them past the earlier ones'.
        offsets = torch.cumsum(num_patches, 0) - num_patches
        shift = torch.repeat_interleave(offsets.to(pooling.device), num_pooled.to(pooling.device))
        pooling = torch.where(pooling >= 0, pooling + shift[:, None].to(pooling.dtype), pooling)
        return {'pixel_values': pixel_values, 'token_pooling': pooling, 'num_pooled_patches': num_pooled}

    def _process_image_input(self, image_input: dict) -> Tuple[torch.Tensor, ...]:
        features = self.vision_backbone(images=image_input['pixel_values'].unsqueeze(0),
                                        token_pooling=image_input['token_pooling'].unsqueeze(0))
        num_pooled = image_input['num_pooled_patches'].tolist()
        if features.shape[0] != sum(num_pooled):
            raise ValueError(f'{features.shape[0]} image features for {sum(num_pooled)} <im_patch> tokens')
        patch = torch.tensor([self.image_patch_id], device=features.device)
        patch_embedding = self.get_language_model().embed_input_ids(patch)
        return tuple((features + patch_embedding.to(features.dtype)).split(num_pooled, dim=0))
