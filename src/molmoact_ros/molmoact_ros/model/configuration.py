"""Configuration of the native MolmoAct model.

The classes read the ``config.json`` of AllenAI's released MolmoAct checkpoints as they are (same keys,
nested ``vit_config`` / ``adapter_config`` / ``llm_config``; ``model_type`` "molmoact") and write the same
layout back. Field meanings, defaults and the released 7B-D values are in docs/molmoact-reference-facts.md
§1. Defaults here are those of the released 7B-D model, not the reference classes' defaults (which
differ in a few places: 48 vs 28 LLM layers, 577 vs 729 ViT positions).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from transformers import PretrainedConfig

MODEL_TYPE = 'molmoact'


def _sub_config(cls, value):
    """Build a sub-config from None, a dict (as stored in config.json) or an instance."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, PretrainedConfig):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise TypeError(f'{cls.__name__}: expected a dict or {cls.__name__}, got {type(value).__name__}')
    value = dict(value)
    # Keys PretrainedConfig writes for every config; the sub-configs carry no such state of their own.
    for key in ('model_type', 'transformers_version', 'architectures', '_name_or_path', 'dtype', 'torch_dtype',
                'id2label', 'label2id', 'return_dict', 'output_attentions', 'output_hidden_states',
                'is_encoder_decoder', 'chunk_size_feed_forward', 'problem_type'):
        value.pop(key, None)
    return cls(**value)


class MolmoActVitConfig(PretrainedConfig):
    """Vision transformer (SigLIP2 so400m/14 in the D variant, OpenAI CLIP ViT-L/14-336 in the O variant)."""

    model_type = 'molmoact_vit'

    def __init__(self, hidden_size: int = 1152, intermediate_size: int = 4304, num_hidden_layers: int = 27,
                 num_attention_heads: int = 16, num_key_value_heads: int = 16, head_dim: int = 72,
                 hidden_act: str = 'gelu_pytorch_tanh', layer_norm_eps: float = 1e-6,
                 image_default_input_size: Sequence[int] = (378, 378), image_patch_size: int = 14,
                 image_num_pos: int = 729, attention_dropout: float = 0.0, residual_dropout: float = 0.0,
                 initializer_range: float = 0.02, float32_attention: bool = True, use_cls_token: bool = False,
                 patch_bias: bool = True, pre_layernorm: bool = False, **kwargs):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.image_default_input_size = tuple(image_default_input_size)
        self.image_patch_size = image_patch_size
        self.image_num_pos = image_num_pos
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.initializer_range = initializer_range
        self.float32_attention = float32_attention
        self.use_cls_token = use_cls_token
        self.patch_bias = patch_bias
        self.pre_layernorm = pre_layernorm
        super().__init__(**kwargs)

    @property
    def image_num_patch(self) -> Tuple[int, int]:
        h, w = self.image_default_input_size
        return h // self.image_patch_size, w // self.image_patch_size


class MolmoActAdapterConfig(PretrainedConfig):
    """Connector: concatenation of ViT layers, 2x2 attention pooling, SwiGLU projector into the LLM width."""

    model_type = 'molmoact_adapter'

    def __init__(self, vit_layers: Sequence[int] = (-3, -9), hidden_size: int = 1152, num_attention_heads: int = 16,
                 num_key_value_heads: int = 16, head_dim: int = 72, float32_attention: bool = True,
                 attention_dropout: float = 0.0, residual_dropout: float = 0.0, hidden_act: str = 'silu',
                 intermediate_size: int = 18944, text_hidden_size: int = 3584, image_feature_dropout: float = 0.0,
                 initializer_range: float = 0.02, image_padding_embed: Optional[str] = None, **kwargs):
        self.vit_layers = tuple(vit_layers)
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.float32_attention = float32_attention
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.hidden_act = hidden_act
        self.intermediate_size = intermediate_size
        self.text_hidden_size = text_hidden_size
        self.image_feature_dropout = image_feature_dropout
        self.initializer_range = initializer_range
        self.image_padding_embed = image_padding_embed
        super().__init__(**kwargs)


class MolmoActLlmConfig(PretrainedConfig):
    """Decoder-only language model (Qwen2.5-7B in the D variant, OLMo-2 7B in the O variant)."""

    model_type = 'molmoact_llm'

    def __init__(self, hidden_size: int = 3584, num_attention_heads: int = 28, num_key_value_heads: Optional[int] = 4,
                 head_dim: int = 128, vocab_size: int = 152064, additional_vocab_size: Optional[int] = 128,
                 qkv_bias: bool = True, num_hidden_layers: int = 28, intermediate_size: int = 18944,
                 hidden_act: str = 'silu', embedding_dropout: float = 0.0, attention_dropout: float = 0.0,
                 residual_dropout: float = 0.0, max_position_embeddings: int = 4096, rope_theta: float = 1e6,
                 rope_scaling: Optional[Dict[str, Any]] = None, use_qk_norm: bool = False,
                 qk_norm_type: str = 'olmo', layer_norm_eps: float = 1e-6, norm_after: bool = False,
                 initializer_range: float = 0.02, use_cache: bool = True, tie_word_embeddings: bool = False,
                 **kwargs):
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = head_dim
        self.vocab_size = vocab_size
        self.additional_vocab_size = additional_vocab_size
        self.qkv_bias = qkv_bias
        self.num_hidden_layers = num_hidden_layers
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.embedding_dropout = embedding_dropout
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        # rope_scaling is validated and not stored: only default RoPE is supported (and released).
        self.use_qk_norm = use_qk_norm
        self.qk_norm_type = qk_norm_type
        self.layer_norm_eps = layer_norm_eps
        self.norm_after = norm_after
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        if rope_scaling and rope_scaling.get('rope_type', rope_scaling.get('type', 'default')) != 'default':
            raise NotImplementedError(
                f'rope_scaling {rope_scaling!r} is not supported by the native MolmoAct (the released '
                'checkpoints use default RoPE)')
        if qk_norm_type not in ('olmo', 'qwen3'):
            raise ValueError(f"qk_norm_type must be 'olmo' or 'qwen3', got {qk_norm_type!r}")


class MolmoActConfig(PretrainedConfig):
    """Top-level MolmoAct configuration (``model_type`` "molmoact").

    ``norm_stats`` maps a dataset key (the ``unnorm_key``) to OpenVLA-style statistics
    ``{"action": {"q01": [...], "q99": [...], "mask": [...]}, ...}``; ``n_action_bins`` is 256.
    """

    model_type = MODEL_TYPE
    sub_configs = {'vit_config': MolmoActVitConfig, 'adapter_config': MolmoActAdapterConfig,
                   'llm_config': MolmoActLlmConfig}

    def __init__(self, vit_config=None, adapter_config=None, llm_config=None, image_patch_id: int = 152066,
                 initializer_range: float = 0.02, n_action_bins: int = 256,
                 norm_stats: Optional[Dict[str, Any]] = None, use_cache: bool = True,
                 tie_word_embeddings: bool = False, **kwargs):
        self.vit_config = _sub_config(MolmoActVitConfig, vit_config)
        self.adapter_config = _sub_config(MolmoActAdapterConfig, adapter_config)
        self.llm_config = _sub_config(MolmoActLlmConfig, llm_config)
        self.image_patch_id = image_patch_id
        self.initializer_range = initializer_range
        self.n_action_bins = n_action_bins
        self.norm_stats = dict(norm_stats or {})
        self.use_cache = use_cache
        kwargs.pop('auto_map', None)  # the released file points at remote code; this package registers natively
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def get_text_config(self, decoder=None, encoder=None) -> MolmoActLlmConfig:
        return self.llm_config

    # Convenience accessors used by generation utilities.
    @property
    def num_hidden_layers(self) -> int:
        return self.llm_config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.llm_config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.llm_config.vocab_size

    @property
    def num_attention_heads(self) -> int:
        return self.llm_config.num_attention_heads

    @property
    def num_key_value_heads(self) -> int:
        return self.llm_config.num_key_value_heads

    @property
    def head_dim(self) -> int:
        return self.llm_config.head_dim
