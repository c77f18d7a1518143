"""Native MolmoAct model (vision transformer + 2x2 attention-pooling connector + decoder LLM).

A from-scratch implementation of the architecture of AllenAI's released MolmoAct checkpoints on current
transformers: the module tree reproduces the checkpoints' parameter names, so their safetensors load as
they are, and ``forward`` takes the reference's inputs (``input_ids``, ``images``, ``image_masks``,
``pooled_patches_idx``, ``attention_mask``, ``position_ids``, ``past_key_values``/``cache``, ...).
The architecture facts it follows (with their sources) are in docs/molmoact-reference-facts.md.

Shapes: B batch, T crops per example, N patches per crop (729 = 27x27), K pooled image tokens,
S sequence length, D model width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import ModelOutput

from .configuration import MolmoActAdapterConfig, MolmoActConfig, MolmoActLlmConfig, MolmoActVitConfig

try:  # transformers >= 5 ships its own init helpers that respect already-loaded weights
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - older transformers
    _init = nn.init

# Inputs that only the prefill step consumes; generate drops them afterwards.
IMAGE_INPUT_NAMES = ('images', 'pooled_patches_idx', 'image_masks')


@dataclass
class MolmoActCausalLMOutput(ModelOutput):
    """Output of :class:`MolmoActForActionReasoning`.

    ``cache`` is the KV cache (also readable as ``past_key_values``); ``image_hidden_states`` are the
    projected image features (n_image_tokens, D) when images were given.
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    cache: Optional[Cache] = None
    hidden_states: Optional[Tuple[torch.FloatTensor, ...]] = None
    attentions: Optional[Tuple[torch.FloatTensor, ...]] = None
    image_hidden_states: Optional[torch.FloatTensor] = None

    @property
    def past_key_values(self) -> Optional[Cache]:
        return self.cache


# ---------------------------------------------------------------------------------------------------
# Vision transformer
# ---------------------------------------------------------------------------------------------------
class MolmoActViTAttention(nn.Module):
    """Multi-head attention with separate biased q/k/v/o projections, no mask (bidirectional).

    Used by the ViT blocks and, with a wider input, by the 2x2 pooling of the connector. With
    ``float32_attention`` the scores and weighted sum are computed in fp32 and cast back.
    """

    def __init__(self, input_dim: int, num_heads: int, num_kv_heads: int, head_dim: int, out_dim: int,
                 float32_attention: bool = True, use_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.float32_attention = float32_attention
        self.wq = nn.Linear(input_dim, num_heads * head_dim, bias=use_bias)
        self.wk = nn.Linear(input_dim, num_kv_heads * head_dim, bias=use_bias)
        self.wv = nn.Linear(input_dim, num_kv_heads * head_dim, bias=use_bias)
        self.wo = nn.Linear(num_heads * head_dim, out_dim, bias=True)

    def forward(self, inputs_q: torch.Tensor, inputs_kv: Optional[torch.Tensor] = None) -> torch.Tensor:
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        b, nq, _ = inputs_q.shape
        nk = inputs_kv.shape[1]
        q = self.wq(inputs_q).view(b, nq, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.wk(inputs_kv).view(b, nk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(inputs_kv).view(b, nk, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        dtype = q.dtype
        if self.float32_attention:
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim ** -0.5)
        out = out.to(dtype).transpose(1, 2).reshape(b, nq, self.num_heads * self.head_dim)
        return self.wo(out)


class MolmoActViTMLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.w1 = nn.Linear(width, hidden, bias=True)
        self.act = ACT2FN[act]
        self.w2 = nn.Linear(hidden, width, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)))


class MolmoActViTBlock(nn.Module):
    """Pre-norm ViT block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: MolmoActVitConfig):
        super().__init__()
        c = config
        self.attention = MolmoActViTAttention(c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                                              c.head_dim, c.hidden_size, c.float32_attention)
        self.feed_forward = MolmoActViTMLP(c.hidden_size, c.intermediate_size, c.hidden_act)
        self.attention_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class MolmoActViTBlocks(nn.Module):
    def __init__(self, config: MolmoActVitConfig, num_blocks: int):
        super().__init__()
        self.resblocks = nn.ModuleList(MolmoActViTBlock(config) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outputs = []
        for block in self.resblocks:
            x = block(x)
            outputs.append(x)
        return outputs


class MolmoActVisionTransformer(nn.Module):
    """Patch embedding (a Linear over flattened 14x14x3 patches), learned positions, the blocks.

    Returns the output of every built block (layer index k = output of block k).
    """

    def __init__(self, config: MolmoActVitConfig, num_blocks: int):
        super().__init__()
        self.config = config
        self.num_prefix_tokens = 1 if config.use_cls_token else 0
        if config.use_cls_token:
            self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.positional_embedding = nn.Parameter(torch.zeros(config.image_num_pos, config.hidden_size))
        patch = config.image_patch_size
        self.patch_embedding = nn.Linear(patch * patch * 3, config.hidden_size, bias=config.patch_bias)
        self.pre_ln = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                       if config.pre_layernorm else None)
        self.transformer = MolmoActViTBlocks(config, num_blocks)

    def _positions(self, grid: Tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        pos = self.positional_embedding
        cls_pos = None
        if self.config.use_cls_token:
            cls_pos, pos = pos[:1], pos[1:]
        side = int(math.isqrt(pos.shape[0]))
        pos = pos.reshape(side, side, -1)
        if (side, side) != tuple(grid):  # never the case for MolmoAct's fixed 378 px crops
            pos = F.interpolate(pos.permute(2, 0, 1)[None], size=grid, mode='bicubic', align_corners=False,
                                antialias=True)[0].permute(1, 2, 0)
        pos = pos.reshape(-1, pos.shape[-1])
        if cls_pos is not None:
            pos = torch.cat([cls_pos, pos], dim=0)
        return pos[None].to(dtype)

    def forward(self, patches: torch.Tensor) -> List[torch.Tensor]:
        x = self.patch_embedding(patches)
        if self.config.use_cls_token:
            x = torch.cat([self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        x = x + self._positions(self.config.image_num_patch, x.dtype)
        if self.pre_ln is not None:
            x = self.pre_ln(x)
        return self.transformer(x)


class MolmoActImageProjector(nn.Module):
    """SwiGLU projector into the LLM width: w2(act(w1 x) * w3 x)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, act: str):
        super().__init__()
        self.w1 = nn.Linear(in_dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, out_dim, bias=False)
        self.w3 = nn.Linear(in_dim, hidden, bias=False)
        self.act = ACT2FN[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class MolmoActVisionBackbone(nn.Module):
    """ViT features of the configured layers, 2x2 attention pooling (query = mean of the 4 slots), projector."""

    def __init__(self, vit_config: MolmoActVitConfig, adapter_config: MolmoActAdapterConfig):
        super().__init__()
        n = vit_config.num_hidden_layers
        self.vit_layers = [layer if layer >= 0 else layer + n for layer in adapter_config.vit_layers]
        if not all(0 <= layer < n for layer in self.vit_layers):
            raise ValueError(f'vit_layers {adapter_config.vit_layers} out of range for {n} ViT layers')
        # Only the blocks up to the deepest used layer exist (the released checkpoints store those only).
        self.image_vit = MolmoActVisionTransformer(vit_config, max(self.vit_layers) + 1)
        pool_dim = vit_config.hidden_size * len(self.vit_layers)
        if adapter_config.image_padding_embed == 'pad_and_partial_pad':
            self.pad_embed = nn.Parameter(torch.zeros(2, pool_dim))
        elif adapter_config.image_padding_embed is not None:
            raise NotImplementedError(f'image_padding_embed {adapter_config.image_padding_embed!r}')
        else:
            self.pad_embed = None
        a = adapter_config
        self.image_pooling_2d = MolmoActViTAttention(pool_dim, a.num_attention_heads, a.num_key_value_heads,
                                                     a.head_dim, a.hidden_size, a.float32_attention)
        self.image_projector = MolmoActImageProjector(a.hidden_size, a.intermediate_size, a.text_hidden_size,
                                                      a.hidden_act)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, T, N, 588) patches -> (B, T, N, pool_dim) concatenated features of the configured layers."""
        b, t, n, d = images.shape
        hidden = self.image_vit(images.reshape(b * t, n, d))
        feats = torch.cat([hidden[layer] for layer in self.vit_layers], dim=-1)
        feats = feats[:, self.image_vit.num_prefix_tokens:]
        return feats.reshape(b, t, n, -1)

    def forward(self, images: torch.Tensor, pooled_patches_idx: torch.Tensor,
                image_masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return the projected features of every valid pooled token, (n_valid, D), batch-major.

        A pooled token whose 4 indices are all -1 is batch padding and is dropped. A single -1 slot
        (odd patch-grid padding) is zeroed but still counted in the mean query and still attended to,
        as in the released model. ``image_masks`` only matters with a padding embedding (O variant).
        """
        feats = self.encode_image(images)
        if self.pad_embed is not None and image_masks is not None:
            masks = image_masks.to(feats.dtype)
            all_pad = (masks == 0).to(feats.dtype)
            partial = ((masks < 1) & (masks != 0)).to(feats.dtype)
            feats = feats + self.pad_embed[0] * all_pad[..., None] + self.pad_embed[1] * partial[..., None]
        b = feats.shape[0]
        flat = feats.reshape(b, -1, feats.shape[-1])
        idx = pooled_patches_idx.to(feats.device).long()
        valid = idx >= 0
        k = idx.shape[1]
        gathered = torch.gather(flat, 1, idx.clamp(min=0).reshape(b, -1, 1).expand(-1, -1, flat.shape[-1]))
        gathered = gathered.reshape(b, k, idx.shape[2], -1) * valid[..., None].to(flat.dtype)
        kv = gathered.reshape(b * k, idx.shape[2], -1)
        query = kv.mean(dim=1, keepdim=True)
        pooled = self.image_pooling_2d(query, kv).reshape(b, k, -1)
        projected = self.image_projector(pooled)
        keep = valid.any(dim=-1).reshape(-1)
        return projected.reshape(b * k, -1)[keep]


# ---------------------------------------------------------------------------------------------------
# Language model
# ---------------------------------------------------------------------------------------------------
class MolmoActRMSNorm(nn.Module):
    """RMSNorm computed in fp32, cast back to the input dtype, then scaled by the weight."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class MolmoActEmbedding(nn.Module):
    """Token embedding over the base vocabulary plus the additional (image and extra) token rows."""

    def __init__(self, vocab_size: int, additional: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(vocab_size, dim))
        self.new_embedding = nn.Parameter(torch.zeros(additional, dim)) if additional else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vocab = self.embedding.shape[0]
        base = F.embedding(ids.clamp(max=vocab - 1), self.embedding)
        if self.new_embedding is None:
            return base
        # Look up the two tables separately: concatenating them would copy the whole vocabulary per call.
        extra = F.embedding((ids - vocab).clamp(min=0), self.new_embedding)
        return torch.where((ids >= vocab)[..., None], extra, base)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class MolmoActRotaryEmbedding(nn.Module):
    """Default (non-scaled) RoPE over the full head dimension, half-rotate form."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        # Computed per call (cheap) rather than held in a buffer: a non-persistent buffer would be left
        # uninitialised when from_pretrained builds the model on the meta device.
        self.head_dim = head_dim
        self.theta = theta

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=x.device).float() / self.head_dim
        inv_freq = 1.0 / (self.theta ** exponent)
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


class MolmoActAttention(nn.Module):
    """Causal GQA attention with a fused (biased) qkv projection, optional q/k norm, RoPE, KV cache."""

    def __init__(self, config: MolmoActLlmConfig, layer_idx: int):
        super().__init__()
        c = config
        self.layer_idx = layer_idx
        self.num_heads = c.num_attention_heads
        self.num_kv_heads = c.num_key_value_heads
        self.head_dim = c.head_dim
        self.fused_dims = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim,
                           c.num_key_value_heads * c.head_dim)
        self.att_proj = nn.Linear(c.hidden_size, sum(self.fused_dims), bias=c.qkv_bias)
        self.attn_out = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=False)
        self.qk_norm_type = c.qk_norm_type if c.use_qk_norm else None
        if c.use_qk_norm:
            per_head = c.qk_norm_type == 'qwen3'
            self.q_norm = MolmoActRMSNorm(c.head_dim if per_head else self.fused_dims[0], c.layer_norm_eps)
            self.k_norm = MolmoActRMSNorm(c.head_dim if per_head else self.fused_dims[1], c.layer_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Optional[torch.Tensor],
                cache: Optional[Cache], eager: bool = False):
        b, s, _ = x.shape
        q, k, v = self.att_proj(x).split(self.fused_dims, dim=-1)
        if self.qk_norm_type == 'olmo':
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, s, self.num_heads, self.head_dim)
        k = k.view(b, s, self.num_kv_heads, self.head_dim)
        v = v.view(b, s, self.num_kv_heads, self.head_dim)
        if self.qk_norm_type == 'qwen3':
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        weights = None
        if eager:
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim ** -0.5
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            out = torch.matmul(weights, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim ** -0.5,
                                                 is_causal=mask is None and s > 1)
        out = out.transpose(1, 2).reshape(b, s, -1)
        return self.attn_out(out), weights


class MolmoActMLP(nn.Module):
    """SwiGLU with one fused input projection: first half = value, second half = gate."""

    def __init__(self, config: MolmoActLlmConfig):
        super().__init__()
        self.ff_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.ff_out = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.ff_proj(x).chunk(2, dim=-1)
        return self.ff_out(self.act(gate) * value)


class MolmoActDecoderLayer(nn.Module):
    """Pre-norm decoder block (D variant); ``norm_after`` selects the OLMo-2 post-norm block."""

    def __init__(self, config: MolmoActLlmConfig, layer_idx: int):
        super().__init__()
        self.norm_after = config.norm_after
        self.self_attn = MolmoActAttention(config, layer_idx)
        self.attn_norm = MolmoActRMSNorm(config.hidden_size, config.layer_norm_eps)
        self.ff_norm = MolmoActRMSNorm(config.hidden_size, config.layer_norm_eps)
        self.mlp = MolmoActMLP(config)

    def forward(self, x, cos, sin, mask, cache, eager=False):
        if self.norm_after:
            attn, weights = self.self_attn(x, cos, sin, mask, cache, eager)
            x = x + self.attn_norm(attn)
            return x + self.ff_norm(self.mlp(x)), weights
        attn, weights = self.self_attn(self.attn_norm(x), cos, sin, mask, cache, eager)
        x = x + attn
        return x + self.mlp(self.ff_norm(x)), weights


class MolmoActLlm(nn.Module):
    def __init__(self, config: MolmoActLlmConfig):
        super().__init__()
        self.wte = MolmoActEmbedding(config.vocab_size, config.additional_vocab_size or 0, config.hidden_size)
        self.blocks = nn.ModuleList(MolmoActDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = MolmoActRMSNorm(config.hidden_size, config.layer_norm_eps)


class MolmoActModel(nn.Module):
    """The LLM (``transformer``) and the vision backbone, under the checkpoint's ``model.`` prefix."""

    def __init__(self, config: MolmoActConfig):
        super().__init__()
        self.transformer = MolmoActLlm(config.llm_config)
        self.vision_backbone = MolmoActVisionBackbone(config.vit_config, config.adapter_config)


def _attention_mask(attention_mask: Optional[torch.Tensor], q_len: int, past: int, dtype: torch.dtype,
                    device: torch.device, batch: int) -> Optional[torch.Tensor]:
    """Additive (B, 1, q, kv) mask: causal plus key padding. None when plain causal attention suffices.

    Masked entries get dtype's minimum (not -inf), so a query row whose keys are all padding gets a
    uniform distribution instead of NaN, as in the reference.
    """
    kv_len = past + q_len
    if attention_mask is None and (q_len == 1 or past == 0):
        return None
    q_pos = torch.arange(past, kv_len, device=device)[:, None]
    allowed = torch.arange(kv_len, device=device)[None, :] <= q_pos  # (q, kv)
    allowed = allowed[None].expand(batch, -1, -1)
    if attention_mask is not None:
        key_ok = attention_mask[:, -kv_len:].to(device=device, dtype=torch.bool)
        allowed = allowed & key_ok[:, None, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class MolmoActPreTrainedModel(PreTrainedModel):
    config_class = MolmoActConfig
    base_model_prefix = 'model'
    main_input_name = 'input_ids'
    supports_gradient_checkpointing = True
    _no_split_modules = ['MolmoActDecoderLayer', 'MolmoActViTBlock']
    _skip_keys_device_placement = ['cache', 'past_key_values']
    _supports_sdpa = True
    _supports_attention_backend = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            _init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)
        elif isinstance(module, MolmoActRMSNorm):
            _init.ones_(module.weight)
        elif isinstance(module, MolmoActEmbedding):
            _init.normal_(module.embedding, mean=0.0, std=std)
            if module.new_embedding is not None:
                _init.normal_(module.new_embedding, mean=0.0, std=std)
        elif isinstance(module, MolmoActVisionTransformer):
            _init.normal_(module.positional_embedding, mean=0.0, std=std)
            if module.config.use_cls_token:
                _init.normal_(module.class_embedding, mean=0.0, std=std)
        elif isinstance(module, MolmoActVisionBackbone) and module.pad_embed is not None:
            _init.zeros_(module.pad_embed)


class MolmoActForActionReasoning(MolmoActPreTrainedModel, GenerationMixin):
    """MolmoAct with its LM head: image + text in, next-token logits out; ``generate`` works with a KV cache.

    Images enter only on the prefill step: their projected features are added to the embeddings of the
    ``<im_patch>`` tokens (``config.image_patch_id``), one feature row per such token, in order.
    """

    def __init__(self, config: MolmoActConfig):
        super().__init__(config)
        llm = config.llm_config
        self.model = MolmoActModel(config)
        self.lm_head = nn.Linear(llm.hidden_size, llm.vocab_size, bias=False)
        self.rotary = MolmoActRotaryEmbedding(llm.head_dim, llm.rope_theta)
        # Set by ``gradient_checkpointing_enable()`` (transformers): decoder blocks are recomputed in the
        # backward pass while training (no KV cache then).
        self.gradient_checkpointing = False
        self.post_init()

    # -- embeddings ----------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.model.transformer.wte

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def build_input_embeddings(self, input_ids: torch.Tensor, images: Optional[torch.Tensor] = None,
                               pooled_patches_idx: Optional[torch.Tensor] = None,
                               image_masks: Optional[torch.Tensor] = None):
        """Token embeddings with the image features added at the ``<im_patch>`` positions.

        Returns (embeddings (B, S, D), image features (n, D) or None). Raises ValueError when the number
        of ``<im_patch>`` tokens differs from the number of valid pooled image tokens.
        """
        ids = input_ids * (input_ids != -1)
        embeds = self.model.transformer.wte(ids)
        if images is None:
            return embeds, None
        if pooled_patches_idx is None:
            raise ValueError('images given without pooled_patches_idx')
        vision = self.model.vision_backbone
        # A plain Parameter (never quantized) gives the vision tower's compute dtype and device.
        param = vision.image_vit.positional_embedding
        feats = vision(images.to(device=param.device, dtype=param.dtype), pooled_patches_idx, image_masks)
        is_patch = input_ids == self.config.image_patch_id
        n_tokens = int(is_patch.sum())
        if n_tokens != feats.shape[0]:
            raise ValueError(f'{n_tokens} <im_patch> tokens in input_ids but {feats.shape[0]} image features: '
                             'the token layout does not match the preprocessed images')
        embeds = embeds.clone()
        embeds[is_patch] = embeds[is_patch] + feats.to(embeds.dtype)
        return embeds, feats

    # -- forward --------------------------------------------------------------------------------
    def forward(self, input_ids: Optional[torch.LongTensor] = None, images: Optional[torch.Tensor] = None,
                image_masks: Optional[torch.Tensor] = None, pooled_patches_idx: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, position_ids: Optional[torch.LongTensor] = None,
                past_key_values: Optional[Cache] = None, inputs_embeds: Optional[torch.FloatTensor] = None,
                labels: Optional[torch.LongTensor] = None, use_cache: Optional[bool] = None,
                output_attentions: Optional[bool] = None, output_hidden_states: Optional[bool] = None,
                cache_position: Optional[torch.LongTensor] = None, logits_to_keep: int = 0,
                cache: Optional[Cache] = None, return_dict: Optional[bool] = None,
                **kwargs) -> MolmoActCausalLMOutput:
        """Next-token logits (over the base vocabulary, ``llm_config.vocab_size`` columns).

        ``past_key_values`` and ``cache`` are the same thing (the reference's and transformers 5's names).
        Without ``position_ids`` positions continue from the cache length (0, 1, ... for a fresh prompt),
        as in the reference's plain forward; ``generate`` passes positions that skip left padding.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError('give exactly one of input_ids and inputs_embeds')
        if images is not None and inputs_embeds is not None:
            raise ValueError('images can only be combined with input_ids')
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        image_features = None
        if inputs_embeds is None:
            inputs_embeds, image_features = self.build_input_embeddings(input_ids, images, pooled_patches_idx,
                                                                        image_masks)
        b, s, _ = inputs_embeds.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if cache_position is not None:
                position_ids = cache_position[None].expand(b, -1)
            else:
                position_ids = torch.arange(past, past + s, device=inputs_embeds.device)[None].expand(b, -1)
        eager = bool(output_attentions) or getattr(self.config, '_attn_implementation', 'sdpa') == 'eager'
        mask = _attention_mask(attention_mask, s, past, inputs_embeds.dtype, inputs_embeds.device, b)
        if eager and mask is None and s > 1:
            mask = _attention_mask(torch.ones(b, past + s, device=inputs_embeds.device), s, past,
                                   inputs_embeds.dtype, inputs_embeds.device, b)
        cos, sin = self.rotary(inputs_embeds, position_ids.to(inputs_embeds.device))
        x = inputs_embeds
        hidden_states = [] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for block in self.model.transformer.blocks:
            if hidden_states is not None:
                hidden_states.append(x)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                if cache is not None and use_cache:
                    raise ValueError('gradient checkpointing needs use_cache=False while training')
                x, weights = self._gradient_checkpointing_func(block.__call__, x, cos, sin, mask, None, eager)
            else:
                x, weights = block(x, cos, sin, mask, cache, eager)
            if attentions is not None:
                attentions.append(weights)
        x = self.model.transformer.ln_f(x)
        if hidden_states is not None:
            hidden_states.append(x)
        keep = slice(-logits_to_keep, None) if logits_to_keep else slice(None)
        logits = self.lm_head(x[:, keep])
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        return MolmoActCausalLMOutput(loss=loss, logits=logits, cache=cache if use_cache else None,
                                      hidden_states=tuple(hidden_states) if hidden_states is not None else None,
                                      attentions=tuple(attentions) if attentions is not None else None,
                                      image_hidden_states=image_features)

    # -- generation -----------------------------------------------------------------------------
    def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, cache=None, attention_mask=None,
                                      inputs_embeds=None, is_first_iteration=False, **kwargs):
        """As GenerationMixin's, plus the image inputs on the prefill step only."""
        image_inputs = {name: kwargs.pop(name, None) for name in IMAGE_INPUT_NAMES}
        if cache is None:
            cache = kwargs.pop('past_key_values', None)
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, next_sequence_length=next_sequence_length, cache=cache, attention_mask=attention_mask,
            inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get('use_cache', True):
            model_inputs.update({k: v for k, v in image_inputs.items() if v is not None})
        return model_inputs
