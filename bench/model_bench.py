#!/usr/bin/env python3
"""Prefill and per-token decode time of the native MolmoAct.

Modes (all print ``name: value unit`` lines at the end):

* ``tiny`` (default): the tiny random-weight structural model (real vocabulary) on one 256x256 view with
  the released multi-view prompt: prefill seconds, decode seconds per token (KV cache), and the cost of
  the same tokens without a cache for comparison.
* ``layer-estimate``: a paper estimate of one 7B-D step on this device: one real-size decoder layer, one
  real-size ViT block, the real-size connector and LM head are timed and scaled by the released layer
  counts (28 LLM layers, 25 ViT blocks). Random weights; an estimate, not a measurement of the full model.
* ``full``: the whole 7B-D-shaped model with random weights (needs a GPU with ~20 GB for bf16;
  ``--quantization 4bit`` loads it through bitsandbytes NF4).

    python bench/model_bench.py                      # tiny model, CPU
    python bench/model_bench.py --mode layer-estimate --dtype float32
    python bench/model_bench.py --mode full --device cuda --dtype bfloat16 [--quantization 4bit]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from molmoact_ros.model import MolmoActConfig, MolmoActForActionReasoning
from molmoact_ros.model.loading import DTYPES, LoadOptions, load_model
from molmoact_ros.model.modeling import MolmoActDecoderLayer, MolmoActViTBlock
from molmoact_ros.model.processing import MolmoActProcessor, build_prompt, chat_text
from molmoact_ros.model.tiny import save_tiny_checkpoint

IMAGE_TOKENS_256 = 424  # image tokens of one <=378 px view
PROMPT_TOKENS = 110     # approximate prompt tokens of the released multi-view prompt
REAL_LLM_LAYERS = 28
REAL_VIT_BLOCKS = 25


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_checkpoint(model, processor, device: str, new_tokens: int, repeat: int, prefix: str) -> None:
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    inputs = processor(chat_text(build_prompt('put the red block in the bowl')), [image])
    inputs = {k: v.to(device) for k, v in inputs.items()}
    prompt_len = inputs['input_ids'].shape[1]

    @torch.no_grad()
    def prefill():  # as generate runs it: logits of the last position only
        return model(**inputs, use_cache=True, logits_to_keep=1)

    prefill_s = timed(prefill, device, repeat)

    @torch.no_grad()
    def decode():
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=token, cache=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
        sync(device)
        return (time.perf_counter() - start) / new_tokens

    decode()
    per_token = statistics.median(decode() for _ in range(repeat))

    @torch.no_grad()
    def no_cache_step():
        return model(**inputs, use_cache=False, logits_to_keep=1)

    no_cache_s = timed(no_cache_step, device, max(1, repeat // 2))
    print(f'# {prefix}: prompt {prompt_len} tokens, {new_tokens} decoded tokens, device {device}')
    print(f'{prefix}_prompt_tokens: {prompt_len} tokens')
    print(f'{prefix}_prefill: {prefill_s * 1e3:.1f} ms')
    print(f'{prefix}_decode_per_token: {per_token * 1e3:.2f} ms')
    print(f'{prefix}_full_recompute_per_token: {no_cache_s * 1e3:.1f} ms')
    print(f'{prefix}_cache_speedup: {no_cache_s / per_token:.1f} x')


def bench_tiny(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = save_tiny_checkpoint(Path(tmp) / 'tiny')
        build_s = time.perf_counter() - start
        model = load_model(path, LoadOptions(dtype=args.dtype, device=args.device))
        processor = MolmoActProcessor.from_pretrained(path)
        print(f'tiny_build: {build_s:.2f} s')
        bench_checkpoint(model, processor, args.device, args.new_tokens, args.repeat, 'tiny')


def bench_layer_estimate(args) -> None:
    cfg = MolmoActConfig()  # released 7B-D sizes
    dtype = DTYPES[args.dtype]
    device = args.device
    torch.manual_seed(0)
    llm = cfg.llm_config
    prompt = IMAGE_TOKENS_256 + PROMPT_TOKENS
    with torch.no_grad():
        layer = MolmoActDecoderLayer(llm, 0).to(device=device, dtype=dtype).eval()
        from molmoact_ros.model.modeling import MolmoActRotaryEmbedding
        from transformers.cache_utils import DynamicCache
        rope = MolmoActRotaryEmbedding(llm.head_dim, llm.rope_theta)
        x = torch.randn(1, prompt, llm.hidden_size, device=device, dtype=dtype)
        pos = torch.arange(prompt, device=device)[None]
        cos, sin = rope(x, pos)

        def prefill_layer():
            return layer(x, cos, sin, None, DynamicCache())

        layer_prefill = timed(prefill_layer, device, args.repeat)
        cache = DynamicCache()
        layer(x, cos, sin, None, cache)
        x1 = torch.randn(1, 1, llm.hidden_size, device=device, dtype=dtype)
        c1, s1 = rope(x1, torch.tensor([[prompt]], device=device))

        def decode_layer():
            out = layer(x1, c1, s1, None, cache)
            cache.crop(-1)  # drop the new token: the context length stays fixed
            return out

        layer_decode = timed(decode_layer, device, args.repeat * 5)
        del layer
        head = torch.nn.Linear(llm.hidden_size, llm.vocab_size, bias=False).to(device=device, dtype=dtype)
        head_s = timed(lambda: head(x1), device, args.repeat * 5)
        del head
        vit = cfg.vit_config
        block = MolmoActViTBlock(vit).to(device=device, dtype=dtype).eval()
        crops = torch.randn(2, 729, vit.hidden_size, device=device, dtype=dtype)  # global view + 1 crop
        vit_block_s = timed(lambda: block(crops), device, args.repeat)
        del block
    prefill_est = REAL_LLM_LAYERS * layer_prefill + REAL_VIT_BLOCKS * vit_block_s + head_s
    decode_est = REAL_LLM_LAYERS * layer_decode + head_s
    print(f'# 7B-D estimate from single real-size layers ({args.dtype}, {device}), prompt {prompt} tokens')
    print(f'real_llm_layer_prefill: {layer_prefill * 1e3:.1f} ms')
    print(f'real_llm_layer_decode: {layer_decode * 1e3:.2f} ms')
    print(f'real_lm_head_per_token: {head_s * 1e3:.2f} ms')
    print(f'real_vit_block_2crops: {vit_block_s * 1e3:.1f} ms')
    print(f'estimate_7b_prefill: {prefill_est:.2f} s')
    print(f'estimate_7b_decode_per_token: {decode_est * 1e3:.0f} ms')
    print(f'estimate_7b_chunk_400_tokens: {prefill_est + 400 * decode_est:.1f} s')


def bench_full(args) -> None:
    cfg = MolmoActConfig()
    dtype = DTYPES[args.dtype]
    from molmoact_ros.model.tokenizer import build_molmoact_tokenizer
    processor = MolmoActProcessor(build_molmoact_tokenizer())
    start = time.perf_counter()
    with torch.device(args.device):
        model = MolmoActForActionReasoning(cfg).to(dtype).eval()
    build_s = time.perf_counter() - start
    if args.quantization != 'none':
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            del model
            torch.cuda.empty_cache() if args.device.startswith('cuda') else None
            model = load_model(tmp, LoadOptions(dtype=args.dtype, device=args.device, quantization=args.quantization))
    print(f'full_build: {build_s:.1f} s')
    if args.device.startswith('cuda'):
        print(f'full_gpu_memory: {torch.cuda.memory_allocated() / 2**30:.2f} GiB')
    bench_checkpoint(model, processor, args.device, args.new_tokens, args.repeat, f'full_{args.quantization}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--mode', choices=('tiny', 'layer-estimate', 'full'), default='tiny')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=sorted(DTYPES))
    parser.add_argument('--quantization', default='none', choices=('none', '8bit', '4bit'))
    parser.add_argument('--new-tokens', type=int, default=32)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    {'tiny': bench_tiny, 'layer-estimate': bench_layer_estimate, 'full': bench_full}[args.mode](args)


if __name__ == '__main__':
    main()
