"""Compact weights: a trained checkpoint as a few MB (fp16, only the vocabulary rows in use), and back.

A small model trained here is almost all 152k-row embedding and output matrices whose untouched rows are
the initial random values (embedding) or zero (output rows outside the trained set). :func:`export_compact`
writes ``compact.safetensors`` with every other tensor in fp16, and of the two big matrices only the rows
whose values differ from a seeded regeneration (embedding: the rows training touched) or are non-zero
(output), with their ids; the untouched embedding rows are regenerated from the seed on assembly, exactly
(the same torch generator, then fp16-rounded). :func:`assemble_checkpoint` rebuilds a released-layout
checkpoint directory (config.json with its norm_stats, model.safetensors, generation_config.json, tokenizer,
preprocessor and processor configs) on first use, like :mod:`..model.tiny` builds the tiny model; its logits
are bit-identical to the fp16-rounded trained model's.

    python -m molmoact_ros.training.compact export MODEL_DIR COMPACT_DIR
    python -m molmoact_ros.training.compact assemble COMPACT_DIR CHECKPOINT_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

__all__ = ['export_compact', 'assemble_checkpoint', 'fp16_rounded', 'filler_rows', 'COMPACT_FILE']

COMPACT_FILE = 'compact.safetensors'
META_FILE = 'compact.json'
EMBED = 'model.transformer.wte.embedding'
HEAD = 'lm_head.weight'
_FILES = ('config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja',
          'special_tokens_map.json', 'preprocessor_config.json', 'processor_config.json', 'README.md',
          'molmoact_training.json')
FILLER_STD = 0.02
_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'special_tokens_map.json')


def _is_own_tokenizer(model_dir: Path) -> bool:
    info = Path(model_dir) / 'molmoact_training.json'
    if not info.is_file():
        return False
    return json.loads(info.read_text()).get('tokenizer') == 'build_molmoact_tokenizer'


def filler_rows(shape, seed: int) -> torch.Tensor:
    """The seeded stand-in of untouched embedding rows (normal, std 0.02, fp16-rounded)."""
    gen = torch.Generator().manual_seed(int(seed))
    return (torch.randn(tuple(shape), generator=gen) * FILLER_STD).half()


def fp16_rounded(state: dict) -> dict:
    """Every floating tensor rounded through fp16 (what the compact form stores), kept in fp32."""
    return {k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()}


def export_compact(model_dir: Path, out_dir: Path, filler_seed=None, embed_ids=None) -> dict:
    """Write the compact form of ``model_dir`` into ``out_dir``. ``embed_ids``: the embedding rows to keep
    (default: the rows that differ from the filler, i.e. every row unless training began from the filler).
    Untouched embedding rows are replaced by the seeded filler (their values never mattered: those tokens
    never occur in the data). Returns the metadata written to compact.json."""
    from safetensors.torch import load_file, save_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if filler_seed is None:
        info = model_dir / 'molmoact_training.json'
        filler_seed = (json.loads(info.read_text()).get('filler_seed') if info.is_file() else None) or 0
    state = load_file(str(model_dir / 'model.safetensors'))
    out = {}
    embed = state[EMBED].half()
    if embed_ids is None:
        filler = filler_rows(embed.shape, filler_seed)
        embed_ids = (embed != filler).any(dim=1).nonzero()[:, 0]
    embed_ids = torch.as_tensor(sorted(set(int(i) for i in embed_ids)), dtype=torch.long)
    head = state[HEAD].half()
    head_ids = (head != 0).any(dim=1).nonzero()[:, 0]
    out[EMBED + '.ids'] = embed_ids
    out[EMBED + '.rows'] = embed[embed_ids].contiguous()
    out[HEAD + '.ids'] = head_ids
    out[HEAD + '.rows'] = head[head_ids].contiguous()
    for name, tensor in state.items():
        if name in (EMBED, HEAD):
            continue
        out[name] = tensor.half().contiguous() if tensor.is_floating_point() else tensor.contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(out, str(out_dir / COMPACT_FILE))
    # The tokenizer files (~11 MB) are left out when they are the suite's own MolmoAct tokenizer (every model
    # trained from scratch here): assembly writes build_molmoact_tokenizer() again, offline.
    own_tokenizer = _is_own_tokenizer(model_dir)
    for name in _FILES:
        if own_tokenizer and name in _TOKENIZER_FILES:
            continue
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    meta = {'format': 'molmoact_ros compact v1', 'filler_seed': int(filler_seed), 'filler_std': FILLER_STD,
            'embedding_shape': list(embed.shape), 'head_shape': list(head.shape),
            'embedding_rows': int(embed_ids.numel()), 'head_rows': int(head_ids.numel()),
            'dtype': 'float16', 'tokenizer': 'build_molmoact_tokenizer' if own_tokenizer else 'files', 'note': 'untouched embedding rows are regenerated from filler_seed; output rows '
            'not listed are zero'}
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2) + '\n')
    return meta


def compact_state(compact_dir: Path) -> dict:
    """The full fp16 state dict of a compact directory (filler + rows assembled), as fp32 tensors."""
    from safetensors.torch import load_file

    compact_dir = Path(compact_dir)
    meta = json.loads((compact_dir / META_FILE).read_text())
    data = load_file(str(compact_dir / COMPACT_FILE))
    embed = filler_rows(meta['embedding_shape'], meta['filler_seed'])
    embed[data.pop(EMBED + '.ids')] = data.pop(EMBED + '.rows')
    head = torch.zeros(meta['head_shape'], dtype=torch.float16)
    head[data.pop(HEAD + '.ids')] = data.pop(HEAD + '.rows')
    state = {EMBED: embed, HEAD: head, **data}
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def assemble_checkpoint(compact_dir: Path, out_dir: Path) -> Path:
    """Build the released-layout checkpoint (fp32 weights holding the fp16 values) into ``out_dir``."""
    from safetensors.torch import save_file

    compact_dir, out_dir = Path(compact_dir), Path(out_dir)
    state = compact_state(compact_dir)
    tmp = out_dir.with_name(out_dir.name + '.partial')
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / 'model.safetensors'), metadata={'format': 'pt'})
    for name in _FILES:
        if (compact_dir / name).is_file():
            shutil.copy2(compact_dir / name, tmp / name)
    meta = json.loads((compact_dir / META_FILE).read_text())
    if meta.get('tokenizer') == 'build_molmoact_tokenizer':
        from ..model.tokenizer import build_molmoact_tokenizer
        build_molmoact_tokenizer().save_pretrained(tmp)
    config = json.loads((tmp / 'config.json').read_text())
    config['dtype'] = 'float32'
    config.pop('torch_dtype', None)
    (tmp / 'config.json').write_text(json.dumps(config, indent=2) + '\n')
    (tmp / 'molmoact_compact_source.json').write_text(json.dumps({'assembled_from': str(compact_dir)}) + '\n')
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description='Export a trained MolmoAct compactly, or assemble it back.')
    sub = p.add_subparsers(dest='cmd', required=True)
    e = sub.add_parser('export')
    e.add_argument('model_dir', type=Path)
    e.add_argument('out_dir', type=Path)
    e.add_argument('--filler-seed', type=int, default=None, help='default: the training run\'s (molmoact_training.json)')
    a = sub.add_parser('assemble')
    a.add_argument('compact_dir', type=Path)
    a.add_argument('out_dir', type=Path)
    args = p.parse_args(argv)
    if args.cmd == 'export':
        meta = export_compact(args.model_dir, args.out_dir, args.filler_seed)
        size = sum(f.stat().st_size for f in args.out_dir.iterdir() if f.is_file())
        print(f'compact: {args.out_dir} ({size / 1e6:.2f} MB; {meta["embedding_rows"]} embedding rows, '
              f'{meta["head_rows"]} output rows)')
    else:
        print(f'assembled: {assemble_checkpoint(args.compact_dir, args.out_dir)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
