"""Native MolmoAct model: checkpoint layout, save/load, KV cache, generate, batching, loading options.

Parity with AllenAI's reference implementation is checked against a reference fixture in
test/test_reference_parity.py; these tests check the model's own consistency on a tiny random config.
"""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from molmoact_ros.model import MolmoActConfig, MolmoActForActionReasoning
from molmoact_ros.model.loading import LoadOptions, ModelLoadError, bitsandbytes_status, load_model

VOCAB, EXTRA = 256, 128
IM_PATCH = VOCAB + 2
BOS = 200
N_IMAGE_TOKENS = 10


def tiny_config(**llm) -> MolmoActConfig:
    return MolmoActConfig(
        vit_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                        num_key_value_heads=2, head_dim=16, image_num_pos=729),
        adapter_config=dict(vit_layers=(-1, -3), hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                            head_dim=16, intermediate_size=96, text_hidden_size=64),
        llm_config=dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                        vocab_size=VOCAB, additional_vocab_size=EXTRA, num_hidden_layers=2,
                        intermediate_size=128, **llm),
        image_patch_id=IM_PATCH,
        norm_stats={'toy': {'action': {'q01': [-1.0] * 7, 'q99': [1.0] * 7, 'mask': [True] * 6 + [False]}}})


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    m = MolmoActForActionReasoning(tiny_config()).eval()
    with torch.no_grad():  # non-trivial values everywhere (HF init leaves biases 0 and norms 1)
        gen = torch.Generator().manual_seed(1)
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim > 1 else 0.1))
    return m


def image_inputs(seed: int, n_tokens: int = N_IMAGE_TOKENS):
    """Two 378px crops of random patches and n_tokens pooled tokens with some odd-size -1 slots."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 2, 729, 588, generator=g) * 2 - 1
    idx = torch.randint(0, 2 * 729, (1, n_tokens, 4), generator=g)
    idx[0, ::3, 3] = -1
    return images, idx


def prompt(seed: int, n_text: int = 6, n_tokens: int = N_IMAGE_TOKENS):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, VOCAB - 60, (n_text,), generator=g)
    return torch.cat([torch.tensor([BOS, VOCAB]), torch.full((n_tokens,), IM_PATCH),
                      torch.tensor([VOCAB + 1]), text])[None]


def test_parameter_names_follow_the_released_checkpoint_layout(model):
    names = set(model.state_dict())
    expected = {
        'model.transformer.wte.embedding', 'model.transformer.wte.new_embedding',
        'model.transformer.blocks.0.self_attn.att_proj.weight', 'model.transformer.blocks.0.self_attn.att_proj.bias',
        'model.transformer.blocks.1.self_attn.attn_out.weight', 'model.transformer.blocks.1.attn_norm.weight',
        'model.transformer.blocks.1.mlp.ff_proj.weight', 'model.transformer.blocks.1.mlp.ff_out.weight',
        'model.transformer.blocks.1.ff_norm.weight', 'model.transformer.ln_f.weight',
        'model.vision_backbone.image_vit.positional_embedding',
        'model.vision_backbone.image_vit.patch_embedding.weight', 'model.vision_backbone.image_vit.patch_embedding.bias',
        'model.vision_backbone.image_vit.transformer.resblocks.3.attention.wq.weight',
        'model.vision_backbone.image_vit.transformer.resblocks.3.attention.wo.bias',
        'model.vision_backbone.image_vit.transformer.resblocks.3.feed_forward.w1.weight',
        'model.vision_backbone.image_vit.transformer.resblocks.3.attention_norm.bias',
        'model.vision_backbone.image_vit.transformer.resblocks.3.ffn_norm.weight',
        'model.vision_backbone.image_pooling_2d.wq.weight', 'model.vision_backbone.image_pooling_2d.wo.bias',
        'model.vision_backbone.image_projector.w1.weight', 'model.vision_backbone.image_projector.w2.weight',
        'model.vision_backbone.image_projector.w3.weight', 'lm_head.weight',
    }
    assert expected <= names
    assert not any('rotary' in n or 'inv_freq' in n for n in names)  # nothing derivable is saved
    sd = model.state_dict()
    assert sd['model.transformer.blocks.0.self_attn.att_proj.weight'].shape == (64 + 2 * 2 * 16, 64)
    assert sd['model.transformer.blocks.0.mlp.ff_proj.weight'].shape == (2 * 128, 64)
    assert sd['model.vision_backbone.image_pooling_2d.wq.weight'].shape == (32, 2 * 32)  # 2 layers concatenated
    assert sd['lm_head.weight'].shape == (VOCAB, 64)  # image tokens are input-only


def test_vit_is_built_only_up_to_the_deepest_used_layer():
    cfg = tiny_config()
    cfg.adapter_config.vit_layers = (-3, -4)  # block outputs 1 and 0 of 4
    m = MolmoActForActionReasoning(cfg)
    assert len(m.model.vision_backbone.image_vit.transformer.resblocks) == 2


def test_save_and_load_round_trip_through_auto_classes_without_remote_code(model, tmp_path):
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / 'config.json').read_text())
    assert cfg['model_type'] == 'molmoact' and cfg['image_patch_id'] == IM_PATCH
    # A released checkpoint's config points at remote code; the registered native classes win.
    cfg['auto_map'] = {'AutoConfig': 'configuration_molmoact.MolmoActConfig',
                       'AutoModelForImageTextToText': 'modeling_molmoact.MolmoActForActionReasoning'}
    (tmp_path / 'config.json').write_text(json.dumps(cfg))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MolmoActConfig)
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
        loaded = auto.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, MolmoActForActionReasoning)
    images, idx = image_inputs(0)
    ids = prompt(0)
    with torch.no_grad():
        a = model(input_ids=ids, images=images, pooled_patches_idx=idx).logits
        b = loaded(input_ids=ids, images=images, pooled_patches_idx=idx).logits
    assert torch.equal(a, b)
    assert loaded.config.norm_stats['toy']['action']['mask'][-1] is False


def test_image_features_change_only_the_image_patch_positions(model):
    images, idx = image_inputs(1)
    ids = prompt(1)
    with torch.no_grad():
        with_img, feats = model.build_input_embeddings(ids, images, idx)
        without, none = model.build_input_embeddings(ids)
    assert none is None and feats.shape == (N_IMAGE_TOKENS, 64)
    changed = (with_img != without).any(-1)[0]
    assert torch.equal(changed, ids[0] == IM_PATCH)
    assert torch.allclose(with_img[0][ids[0] == IM_PATCH] - without[0][ids[0] == IM_PATCH], feats)


def test_batch_padding_tokens_are_dropped_and_counts_must_match(model):
    images, idx = image_inputs(2)
    padded = torch.cat([idx, torch.full((1, 3, 4), -1)], dim=1)  # 3 batch-padding rows
    with torch.no_grad():
        _, feats = model.build_input_embeddings(prompt(2), images, padded)
        assert feats.shape[0] == N_IMAGE_TOKENS
        with pytest.raises(ValueError, match='<im_patch> tokens .* image features'):
            model(input_ids=prompt(2, n_tokens=N_IMAGE_TOKENS - 1), images=images, pooled_patches_idx=idx)


def test_kv_cache_continuation_equals_full_recompute(model):
    images, idx = image_inputs(3)
    ids = prompt(3, n_text=12)
    split = ids.shape[1] - 8
    with torch.no_grad():
        full = model(input_ids=ids, images=images, pooled_patches_idx=idx, use_cache=False).logits
        first = model(input_ids=ids[:, :split], images=images, pooled_patches_idx=idx, use_cache=True)
        cache = first.past_key_values
        assert cache.get_seq_length() == split
        chunk = model(input_ids=ids[:, split:split + 3], past_key_values=cache, use_cache=True)  # multi-token
        steps = [chunk.logits]
        for t in range(split + 3, ids.shape[1]):  # then token by token, with the transformers 5 name
            steps.append(model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True).logits)
    cont = torch.cat([first.logits] + steps, dim=1)
    assert (cont - full).abs().max() < 1e-4


def test_generate_equals_a_manual_greedy_loop_without_cache(model):
    images, idx = image_inputs(4)
    ids = prompt(4)
    with torch.no_grad():
        out = model.generate(input_ids=ids, images=images, pooled_patches_idx=idx, attention_mask=torch.ones_like(ids),
                             max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=BOS)
        seq = ids
        for _ in range(8):
            logits = model(input_ids=seq, images=images, pooled_patches_idx=idx, use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, seq)


def test_left_padded_batch_generates_what_each_row_generates_alone(model):
    rows = [(prompt(5, n_text=4), *image_inputs(5)), (prompt(6, n_text=9), *image_inputs(6))]
    width = max(r[0].shape[1] for r in rows)
    ids = torch.stack([torch.cat([torch.full((width - r[0].shape[1],), BOS), r[0][0]]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - r[0].shape[1]), torch.ones(r[0].shape[1])]) for r in rows]).long()
    images = torch.cat([r[1] for r in rows])
    idx = torch.cat([r[2] for r in rows])
    with torch.no_grad():
        batched = model.generate(input_ids=ids, images=images, pooled_patches_idx=idx, attention_mask=mask,
                                 max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=BOS)
        for i, (row_ids, row_images, row_idx) in enumerate(rows):
            alone = model.generate(input_ids=row_ids, images=row_images, pooled_patches_idx=row_idx,
                                   attention_mask=torch.ones_like(row_ids), max_new_tokens=6, min_new_tokens=6,
                                   do_sample=False, pad_token_id=BOS)
            assert torch.equal(batched[i, width:], alone[0, row_ids.shape[1]:])


@pytest.mark.parametrize('llm', [dict(use_qk_norm=True, qk_norm_type='olmo', norm_after=True),
                                 dict(use_qk_norm=True, qk_norm_type='qwen3')])
def test_o_variant_switches_build_and_run(llm, tmp_path):
    cfg = tiny_config(**llm)
    cfg.vit_config.use_cls_token = True
    cfg.vit_config.image_num_pos = 730
    cfg.vit_config.pre_layernorm = True
    cfg.adapter_config.image_padding_embed = 'pad_and_partial_pad'
    m = MolmoActForActionReasoning(cfg).eval()
    names = set(m.state_dict())
    assert {'model.transformer.blocks.0.self_attn.q_norm.weight', 'model.vision_backbone.image_vit.class_embedding',
            'model.vision_backbone.image_vit.pre_ln.weight', 'model.vision_backbone.pad_embed'} <= names
    images, idx = image_inputs(7)
    with torch.no_grad():
        logits = m(input_ids=prompt(7), images=images, pooled_patches_idx=idx,
                   image_masks=torch.ones(1, 2, 729)).logits
    assert torch.isfinite(logits).all()
    m.save_pretrained(tmp_path)
    again = MolmoActForActionReasoning.from_pretrained(tmp_path)
    assert again.config.llm_config.norm_after == llm.get('norm_after', False)


def test_eager_and_sdpa_attention_agree(model, tmp_path):
    model.save_pretrained(tmp_path)
    eager = load_model(tmp_path, LoadOptions(dtype='float32', device='cpu', attn_implementation='eager'))
    images, idx = image_inputs(8)
    ids = prompt(8)
    with torch.no_grad():
        a = model(input_ids=ids, images=images, pooled_patches_idx=idx).logits
        out = eager(input_ids=ids, images=images, pooled_patches_idx=idx, output_attentions=True)
    assert (a - out.logits).abs().max() < 1e-4
    assert len(out.attentions) == 2 and out.attentions[0].shape[-1] == ids.shape[1]


def test_load_options_dtype_and_errors(model, tmp_path):
    model.save_pretrained(tmp_path)
    bf16 = load_model(tmp_path, LoadOptions(dtype='bfloat16', device='cpu'))
    assert bf16.lm_head.weight.dtype == torch.bfloat16
    images, idx = image_inputs(9)
    with torch.no_grad():
        logits = bf16(input_ids=prompt(9), images=images, pooled_patches_idx=idx).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    with pytest.raises(ModelLoadError, match='could not load MolmoAct checkpoint'):
        load_model(tmp_path / 'missing', LoadOptions(device='cpu', local_files_only=True))
    with pytest.raises(ValueError, match='quantization must be one of'):
        LoadOptions(quantization='3bit')
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match='CUDA is not available'):
            LoadOptions(device='cuda').resolved_device()


@pytest.mark.parametrize('quantization', ['8bit', '4bit'])
def test_bitsandbytes_quantized_load(model, tmp_path, quantization):
    """Where bitsandbytes supports the device, the tiny model loads quantized and runs; elsewhere the
    option fails with a clear error (never silently unquantized)."""
    model.save_pretrained(tmp_path)
    options = LoadOptions(dtype='float32', device='cpu', quantization=quantization)
    problem = bitsandbytes_status('cpu')
    if problem is not None:
        with pytest.raises(ModelLoadError, match='quantization is not available'):
            load_model(tmp_path, options)
        return
    q = load_model(tmp_path, options)
    linear = q.model.transformer.blocks[0].mlp.ff_proj
    assert type(linear).__module__.startswith('bitsandbytes')
    assert type(q.lm_head).__name__ == 'Linear' and type(q.lm_head).__module__.startswith('torch')
    vision_linear = q.model.vision_backbone.image_projector.w1
    assert type(vision_linear).__module__.startswith('torch')  # the vision tower stays in floating point
    images, idx = image_inputs(10)
    ids = prompt(10)
    with torch.no_grad():
        ref = model(input_ids=ids, images=images, pooled_patches_idx=idx).logits
        got = q(input_ids=ids, images=images, pooled_patches_idx=idx).logits.float()
    assert torch.isfinite(got).all()
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < (0.05 if quantization == '8bit' else 0.3), rel


def test_row_sparse_head_gives_the_dense_logits_and_is_installed_only_for_mostly_zero_rows(model, tmp_path):
    from molmoact_ros.model.loading import RowSparseHead

    sparse = MolmoActForActionReasoning(model.config).eval()
    sparse.load_state_dict(model.state_dict())
    with torch.no_grad():
        keep = torch.zeros(sparse.lm_head.weight.shape[0], dtype=torch.bool)
        keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(3))[:len(keep) // 4]] = True
        sparse.lm_head.weight[~keep] = 0.0  # what the restricted training loss leaves
    sparse.save_pretrained(tmp_path)
    dense = load_model(tmp_path, LoadOptions(dtype='float32', device='cpu'))
    fast = load_model(tmp_path, LoadOptions(dtype='float32', device='cpu', sparse_head=True))
    assert isinstance(dense.lm_head, torch.nn.Linear) and isinstance(fast.lm_head, RowSparseHead)
    assert torch.equal(fast.lm_head.ids, keep.nonzero()[:, 0])
    images, idx = image_inputs(1)
    ids = prompt(1)
    with torch.no_grad():
        a = dense(input_ids=ids, images=images, pooled_patches_idx=idx).logits
        b = fast(input_ids=ids, images=images, pooled_patches_idx=idx).logits
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.argmax(-1), b.argmax(-1)) and bool((b[..., ~keep] == 0).all())
    # A dense head (every row in use: a released checkpoint) stays as it is.
    model.save_pretrained(tmp_path / 'dense')
    kept = load_model(tmp_path / 'dense', LoadOptions(dtype='float32', device='cpu', sparse_head=True))
    assert isinstance(kept.lm_head, torch.nn.Linear)
