"""Build a tiny random-weight MolmoAct: a *structural* test model.

It has the real architecture (this package's code), the real Qwen2 vocabulary with MolmoAct's depth and
image tokens, the released preprocessing and prompt layout, and a checkpoint directory laid out like a
released one (config.json, model.safetensors, generation_config.json, tokenizer files,
preprocessor_config.json, processor_config.json), so it loads through exactly the same path as
``allenai/MolmoAct-7B-D-0812``. Its weights are random: its outputs mean nothing. Tests and the offline
demo use it to exercise every code path without a GPU or a download.

    python -m molmoact_ros.model.tiny --output /tmp/molmoact-tiny      # seconds, about 45 MB

Its ``norm_stats`` under the key "molmoact" are placeholder statistics chosen for this test model
(so the default unnorm key works end to end), not the released MolmoAct dataset statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .configuration import MolmoActConfig
from .modeling import MolmoActForActionReasoning
from .processing import MolmoActProcessor
from .tokenizer import (ADDITIONAL_VOCAB_SIZE, ENDOFTEXT_ID, IMAGE_PATCH_ID, LLM_VOCAB_SIZE,
                        build_molmoact_tokenizer)

TINY_MODEL_ID = 'molmoact-tiny-structural'

# Placeholder action statistics for the tiny model (7-D: xyz m, rpy rad, gripper raw), mask as released.
TINY_NORM_STATS = {
    'molmoact': {
        'action': {
            'q01': [-0.02, -0.02, -0.02, -0.05, -0.05, -0.05, 0.0],
            'q99': [0.02, 0.02, 0.02, 0.05, 0.05, 0.05, 1.0],
            'mask': [True, True, True, True, True, True, False],
        },
        'note': 'placeholder statistics of the tiny structural test model, not released MolmoAct statistics',
    },
}


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny model (the vocabulary is always the real one)."""

    vit_width: int = 64
    vit_layers: int = 4
    vit_heads: int = 4
    llm_width: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    mlp: int = 128


def molmoact_config(spec, norm_stats: dict, image_size: Optional[int] = None,
                    max_position_embeddings: Optional[int] = None) -> MolmoActConfig:
    """A MolmoAct config of ``spec``'s sizes (``vit_width``, ``vit_layers``, ``vit_heads``, ``llm_width``,
    ``llm_layers``, ``llm_heads``, ``llm_kv_heads``, ``mlp``) with the real vocabulary; ``image_size``: the
    ViT's square input (default: the released 378 px, 27x27 positions)."""
    vit_head = spec.vit_width // spec.vit_heads
    vit = dict(hidden_size=spec.vit_width, intermediate_size=2 * spec.vit_width, num_hidden_layers=spec.vit_layers,
               num_attention_heads=spec.vit_heads, num_key_value_heads=spec.vit_heads, head_dim=vit_head,
               image_num_pos=729)
    if image_size:
        vit.update(image_default_input_size=(image_size, image_size), image_num_pos=(image_size // 14) ** 2)
    llm = dict(hidden_size=spec.llm_width, num_attention_heads=spec.llm_heads, num_key_value_heads=spec.llm_kv_heads,
               head_dim=spec.llm_width // spec.llm_heads, vocab_size=LLM_VOCAB_SIZE,
               additional_vocab_size=ADDITIONAL_VOCAB_SIZE, num_hidden_layers=spec.llm_layers,
               intermediate_size=spec.mlp)
    if max_position_embeddings:
        llm['max_position_embeddings'] = max_position_embeddings
    return MolmoActConfig(
        vit_config=vit,
        adapter_config=dict(vit_layers=(-1, -3), hidden_size=spec.vit_width, num_attention_heads=spec.vit_heads,
                            num_key_value_heads=spec.vit_heads, head_dim=vit_head, intermediate_size=spec.mlp,
                            text_hidden_size=spec.llm_width),
        llm_config=llm, image_patch_id=IMAGE_PATCH_ID, norm_stats=norm_stats,
        architectures=['MolmoActForActionReasoning'], bos_token_id=ENDOFTEXT_ID, eos_token_id=ENDOFTEXT_ID,
        pad_token_id=ENDOFTEXT_ID)


def tiny_config(spec: TinySpec = TinySpec()) -> MolmoActConfig:
    return molmoact_config(spec, TINY_NORM_STATS)


def build_tiny_model(seed: int = 0, spec: TinySpec = TinySpec()) -> MolmoActForActionReasoning:
    """A randomly initialised tiny MolmoAct. Every parameter gets non-trivial values (norm weights near 1,
    small biases) so outputs depend on every input."""
    torch.manual_seed(seed)
    model = MolmoActForActionReasoning(tiny_config(spec)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if name.endswith('norm.weight') or name.endswith('ln_f.weight') or name.endswith('_norm.weight'):
                param.copy_(1.0 + 0.1 * noise)
            elif param.ndim == 1:
                param.copy_(0.05 * noise)
            elif 'embedding' in name:
                param.copy_(noise * (0.5 if 'positional' in name else 1.0))
            else:
                param.copy_(noise / param.shape[-1] ** 0.5)
    return model


def save_tiny_checkpoint(output: Path, seed: int = 0, spec: TinySpec = TinySpec()) -> Path:
    """Write the tiny model, its tokenizer and its processor to ``output`` (created) and return it."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(seed, spec)
    model.generation_config.bos_token_id = ENDOFTEXT_ID
    model.generation_config.eos_token_id = ENDOFTEXT_ID
    model.generation_config.pad_token_id = ENDOFTEXT_ID
    model.save_pretrained(output)
    processor = MolmoActProcessor(build_molmoact_tokenizer())
    processor.save_pretrained(output)
    (output / 'README.md').write_text(
        f'# {TINY_MODEL_ID}\n\nA tiny MolmoAct with RANDOM weights built by molmoact_ros (seed {seed}): a structural '
        'test model with the real architecture, vocabulary and preprocessing. Its outputs are meaningless. '
        'Its norm_stats are placeholders.\n')
    meta = {'model_id': TINY_MODEL_ID, 'seed': seed, 'spec': spec.__dict__, 'random_weights': True}
    (output / 'molmoact_tiny.json').write_text(json.dumps(meta, indent=2) + '\n')
    return output


def is_tiny_checkpoint(path: Path) -> bool:
    """True for a directory written by :func:`save_tiny_checkpoint`."""
    return (Path(path) / 'molmoact_tiny.json').is_file()


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description='Build the tiny random-weight MolmoAct (structural test model).')
    parser.add_argument('--output', required=True, type=Path, help='checkpoint directory to write')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    start = time.monotonic()
    path = save_tiny_checkpoint(args.output, args.seed)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f'tiny MolmoAct (random weights) written to {path} in {time.monotonic() - start:.1f} s '
          f'({size / 1e6:.1f} MB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
