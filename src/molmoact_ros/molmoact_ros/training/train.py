"""``train_molmoact``: train or fine-tune MolmoAct (:class:`MolmoActForActionReasoning`) on a builder dataset.

    train_molmoact DATASET OUT [--base scratch|tiny|CHECKPOINT] [--steps 2000] [--batch-size 8] [--lr 1e-3]
                   [--trajectory-fraction 0.3] [--loss restricted|answer|naive] [--lora-rank 0] [--resume]

Recipe (MolmoAct's fine-tune recipe where it applies; see README "Train a model"):

* examples: the released prompts and chat framing (``User: {prompt} Assistant:``), the answer appended and
  ended with EOS; a mixture of full reasoning answers (depth -> trace -> actions) and, with probability
  ``--trajectory-fraction``, trajectory-conditioned examples (trace drawn on the image, actions-only answer),
  as the engine's drawn steering stage runs them (:mod:`.data`);
* teacher forcing on the answer tokens only (prompt and image tokens are labelled -100);
* AdamW (no decay on norms, biases and embedding rows), linear warm-up then cosine decay, gradient-norm
  clipping; seeded: the batch of step s is a function of (seed, s), so a resumed run sees the same data;
* ``--loss restricted`` (default, CPU): the exact full-vocabulary cross-entropy computed from the answer
  positions and the dataset's answer-token rows only (:mod:`.vocab_rows`); ``answer``: full-vocabulary
  logits at the answer positions (fine-tuning a pretrained model, GPU); ``naive``: logits everywhere;
* checkpoints every ``--checkpoint-every`` steps (released layout + optimizer, scheduler, RNG and history);
  ``--resume`` continues from the last one; a tqdm bar shows loss and examples/s;
* held-out evaluation (whole episodes held out) under teacher forcing (:mod:`.metrics`); ``metrics.json`` and
  ``training_curves.png`` in OUT;
* the result, ``OUT/model``, is a released-layout checkpoint (config.json with the dataset's ``norm_stats``,
  model.safetensors, generation_config.json, tokenizer, preprocessor and processor configs) that every part
  of the suite loads like ``allenai/MolmoAct-7B-D-0812``.

GPU fine-tuning of a 7B: ``--base allenai/MolmoAct-7B-D-0812 --lora-rank 32 --lora-alpha 16 --loss answer
--dtype bfloat16 --gradient-checkpointing --device cuda`` (peft LoRA on the LLM's linear layers, merged
into the saved model at the end).

ROS-free.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model.configuration import MolmoActConfig
from ..model.image_processing import MolmoActImageProcessor
from ..model.modeling import MolmoActForActionReasoning
from ..model.processing import MolmoActProcessor
from ..model.tiny import molmoact_config
from ..model.tokenizer import ENDOFTEXT_ID, build_molmoact_tokenizer
from .data import IGNORE_INDEX, REASONING, TRAJECTORY, TrainingDataset, collate_batch, encode_example
from .compact import filler_rows
from .metrics import PartMetrics, TokenBytes
from .vocab_rows import VocabRows, gather_answer_states, ids_in

__all__ = ['ModelSpec', 'TrainConfig', 'Trainer', 'small_config', 'small_processor', 'main']

STATE_FILE = 'trainer_state.pt'
LOSS_MODES = ('restricted', 'answer', 'naive')


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of a model trained from scratch (the vocabulary is always the real one).

    The default is sized for a 2-core CPU (README "Train a model"): one 224 px view resized whole
    (``crop_mode`` "resize": 16x16 patches, 64 pooled image tokens), a 4-layer 128-wide ViT, a 4-layer 128-wide
    LLM. With the restricted loss the 152k-row matrices cost almost nothing per step.
    """

    image_size: int = 224
    vit_width: int = 128
    vit_layers: int = 4
    vit_heads: int = 4
    llm_width: int = 128
    llm_layers: int = 4
    llm_heads: int = 4
    llm_kv_heads: int = 2
    mlp: int = 512


def small_config(spec: ModelSpec = ModelSpec(), norm_stats: Optional[dict] = None) -> MolmoActConfig:
    return molmoact_config(spec, norm_stats or {}, image_size=spec.image_size, max_position_embeddings=4096)


def small_processor(spec: ModelSpec = ModelSpec()) -> MolmoActProcessor:
    """The processor of a from-scratch model: one whole-image view at ``spec.image_size`` (no crops)."""
    image = MolmoActImageProcessor(crop_mode='resize', base_image_input_size=(spec.image_size, spec.image_size),
                                   max_crops=1, max_multi_image_crops=1)
    return MolmoActProcessor(build_molmoact_tokenizer(), image)


@dataclass
class TrainConfig:
    dataset: Path
    output: Path
    base: str = 'scratch'
    spec: ModelSpec = field(default_factory=ModelSpec)
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    trajectory_fraction: float = 0.3
    held_out_fraction: float = 0.1
    eval_every: int = 200
    eval_examples: int = 32
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    loss: str = 'restricted'
    answer_template: str = 'dataset'
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    dtype: str = 'float32'
    gradient_checkpointing: bool = False
    device: str = 'cpu'
    threads: int = 0
    progress: bool = True
    stop_after: Optional[int] = None   # stop (as if interrupted) after this step; for tests and time slicing

    def __post_init__(self) -> None:
        self.dataset, self.output = Path(self.dataset), Path(self.output)
        if self.loss not in LOSS_MODES:
            raise ValueError(f'loss must be one of {LOSS_MODES}, got {self.loss!r}')
        if not 0.0 <= self.trajectory_fraction <= 1.0:
            raise ValueError('trajectory_fraction must be in [0, 1]')
        if self.lora_rank and self.loss == 'restricted':
            raise ValueError('LoRA fine-tunes a pretrained model: use --loss answer (the restricted loss zeroes '
                             'the output rows outside the dataset answers)')

    def to_json(self) -> dict:
        d = asdict(self)
        d['dataset'], d['output'] = str(self.dataset), str(self.output)
        return d


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])


def latest_checkpoint(output: Path) -> Optional[Path]:
    root = Path(output) / 'checkpoints'
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob('step-*') if (p / STATE_FILE).is_file())
    return done[-1] if done else None


class Trainer:
    """One training run (see the module doc). ``run()`` trains to ``config.steps`` (or ``stop_after``)."""

    def __init__(self, config: TrainConfig, resume: bool = False, log=print):
        self.config = c = config
        self.log = log
        if c.threads:
            torch.set_num_threads(c.threads)
        self.device = torch.device(c.device)
        self.dataset = TrainingDataset(c.dataset)
        self.train_rows, self.held_rows = self.dataset.split(c.held_out_fraction, c.seed)
        self.step = 0
        self.history: Dict[str, list] = {'step': [], 'loss': [], 'lr': [], 'examples_per_s': []}
        self.evals: List[dict] = []
        state = None
        source = c.base
        if resume:
            ckpt = latest_checkpoint(c.output)
            if ckpt is not None:
                state = torch.load(ckpt / STATE_FILE, map_location='cpu', weights_only=False)
                source = str(ckpt / ('model' if not c.lora_rank else 'base'))
                self.log(f'resuming from {ckpt} (step {state["step"]})')
        _seed_all(c.seed)
        self.model, self.processor = self._load(source, state)
        # Every saved model (checkpoints too) carries what the engine needs to act with it: the dataset's
        # norm stats and its action steps per answer (the engine's action_horizon 0 reads it).
        self.model.config.norm_stats = dict(self.dataset.norm_stats)
        if self.dataset.horizon:
            self.model.config.action_horizon = int(self.dataset.horizon)
        # ... and the answer wording it learns (the engine decodes that grammar, e.g. the fine-tune recipe's two traces).
        template = self.dataset.meta.get('answer_template') if c.answer_template == 'dataset' else c.answer_template
        if template:
            self.model.config.answer_template = str(template)
        self.pad_id = self.processor.token_ids.pad
        self.eos_id = self.processor.token_ids.eos
        self.rows: Optional[VocabRows] = None
        if c.loss == 'restricted':
            if state is not None:
                embed_ids, head_ids = state['embed_ids'], state['head_ids']
            else:
                embed_ids, head_ids = self.vocabulary_ids()
            self.rows = VocabRows(self.model, embed_ids, head_ids).to(self.device).attach()
        if c.lora_rank:
            self.model = self._wrap_lora(self.model, state, source)
        if c.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
        self.params = self._param_groups()
        self.optimizer = torch.optim.AdamW(self.params, lr=c.lr, betas=(0.9, 0.95), eps=1e-8)
        from transformers import get_cosine_schedule_with_warmup
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, c.warmup_steps, c.steps)
        self.token_bytes = TokenBytes(self.processor.tokenizer)
        if state is not None:
            self.optimizer.load_state_dict(state['optimizer'])
            self.scheduler.load_state_dict(state['scheduler'])
            self.step = int(state['step'])
            self.history, self.evals = state['history'], state['evals']
            _set_rng_state(state['rng'])

    # -- model ---------------------------------------------------------------------------------
    def _load(self, source: str, state: Optional[dict]):
        c = self.config
        dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[c.dtype]
        if source == 'scratch':
            model = MolmoActForActionReasoning(small_config(c.spec))
            processor = small_processor(c.spec)
            # Embedding rows from a seeded fp16 filler: rows training never touches stay equal to it, so the
            # compact export (compact.py) stores only the touched ones.
            with torch.no_grad():
                emb = model.model.transformer.wte.embedding
                emb.copy_(filler_rows(emb.shape, c.seed).float())
            init_connector(model)
        else:
            if source == 'tiny':
                from ..nodes.engine_provider import resolve_model
                source = resolve_model('tiny')
            from ..model.loading import LoadOptions, load_model
            model = load_model(source, LoadOptions(dtype=c.dtype, device='cpu', local_files_only=True))
            processor = MolmoActProcessor.from_pretrained(source)
        model.config.use_cache = False
        return model.to(device=self.device, dtype=dtype), processor

    def _lineage(self) -> tuple:
        """(filler seed of the untouched embedding rows, tokenizer) of the saved model: a model trained from
        scratch here has both (the compact export needs them); a model fine-tuned from one inherits them from the
        base's molmoact_training.json; any other base has neither (its tokenizer files are kept)."""
        if self.config.base == 'scratch':
            return self.config.seed, 'build_molmoact_tokenizer'
        info = Path(self.config.base) / 'molmoact_training.json'
        try:
            base = json.loads(info.read_text()) if info.is_file() else {}
        except (OSError, ValueError):
            base = {}
        if base.get('tokenizer') == 'build_molmoact_tokenizer':
            return base.get('filler_seed'), 'build_molmoact_tokenizer'
        return None, 'base checkpoint'

    def _wrap_lora(self, model, state, source):
        from peft import LoraConfig, PeftModel, get_peft_model
        c = self.config
        if state is not None:
            return PeftModel.from_pretrained(model, str(Path(source).parent / 'adapter'), is_trainable=True)
        lora = LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                          target_modules=LORA_TARGETS, bias='none')
        return get_peft_model(model, lora)

    def _param_groups(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and 'embedding' not in name else no_decay).append(p)
        if self.rows is not None:
            decay.append(self.rows.head_rows)
            no_decay.append(self.rows.emb_rows)
        return [{'params': decay, 'weight_decay': self.config.weight_decay},
                {'params': no_decay, 'weight_decay': 0.0}]

    def trainable_parameters(self) -> List[torch.Tensor]:
        return [p for g in self.params for p in g['params']]

    def vocabulary_ids(self):
        """(embedding ids, output ids) the dataset's examples use: every token of every prompt variant, image
        layout and answer (both example kinds); the output ids are the answer tokens plus EOS."""
        proc = self.processor
        rows = self.dataset.rows
        embed, head = set(), {self.eos_id}
        # The image layout and BOS: the tokens of one encoded example of each kind.
        for kind in (REASONING, TRAJECTORY):
            enc = encode_example(proc, rows[0], kind, self.config.answer_template)
            embed |= ids_in([enc.input_ids[:enc.answer_start]])
        from ..model.processing import PromptVariant, build_prompt, chat_text
        for instruction in sorted({r.instruction for r in rows}):
            for variant in (PromptVariant.MULTI_VIEW, PromptVariant.TRAJECTORY_MULTI_VIEW):
                embed |= ids_in([proc.encode_text(chat_text(build_prompt(instruction, variant)))])
        from .data import answer_for
        for r in rows:
            for kind in (REASONING, TRAJECTORY):
                head |= ids_in([proc.encode_text(answer_for(r, kind, self.config.answer_template))])
        embed |= head
        return sorted(embed), sorted(head)

    # -- data ------------------------------------------------------------------------------------
    def batch_plan(self, step: int):
        """(row indices, kinds) of step ``step``: a function of (seed, step) only."""
        c = self.config
        n = len(self.train_rows)
        start = step * c.batch_size
        picks = []
        for k in range(start, start + c.batch_size):
            epoch, offset = divmod(k, n)
            perm = np.random.default_rng([c.seed, epoch]).permutation(n)
            picks.append(self.train_rows[int(perm[offset])])
        draws = np.random.default_rng([c.seed, step, 1]).random(c.batch_size)
        kinds = [TRAJECTORY if d < c.trajectory_fraction else REASONING for d in draws]
        return picks, kinds

    def make_batch(self, rows: Sequence[int], kinds: Sequence[str]):
        examples = [encode_example(self.processor, self.dataset.rows[i], k, self.config.answer_template)
                    for i, k in zip(rows, kinds)]
        return examples, collate_batch(examples, self.pad_id)

    # -- loss ------------------------------------------------------------------------------------
    def _to_device(self, batch):
        dtype = next(p for p in self.model.parameters()).dtype
        out = {k: v.to(self.device) for k, v in batch.items()}
        out['images'] = out['images'].to(dtype)
        return out

    def loss_on(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean cross-entropy over the answer tokens of ``batch`` (labels -100 elsewhere)."""
        b = self._to_device(batch)
        inputs = dict(input_ids=b['input_ids'], images=b['images'], image_masks=b['image_masks'],
                      pooled_patches_idx=b['pooled_patches_idx'], attention_mask=b['attention_mask'],
                      use_cache=False)
        if self.config.loss == 'naive':
            return self.model(**inputs, labels=b['labels']).loss
        out = self.model(**inputs, output_hidden_states=True, logits_to_keep=1)
        states, targets = gather_answer_states(out.hidden_states[-1], b['labels'], IGNORE_INDEX)
        if self.rows is not None:
            return self.rows.loss(states, targets)
        logits = self._lm_head()(states).float()
        return F.cross_entropy(logits, targets)

    def _lm_head(self):
        model = self.model
        return model.get_output_embeddings() if hasattr(model, 'get_output_embeddings') else model.lm_head

    # -- training --------------------------------------------------------------------------------
    def train_step(self) -> float:
        c = self.config
        self.model.train()
        rows, kinds = self.batch_plan(self.step)
        _, batch = self.make_batch(rows, kinds)
        loss = self.loss_on(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), c.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(loss.detach())

    def run(self) -> dict:
        c = self.config
        c.output.mkdir(parents=True, exist_ok=True)
        last = c.steps if c.stop_after is None else min(c.steps, c.stop_after)
        bar = None
        if c.progress:
            from tqdm import tqdm
            bar = tqdm(total=c.steps, initial=self.step, desc='train', unit='step', dynamic_ncols=True)
        ema = None
        while self.step < last:
            t0 = time.perf_counter()
            loss = self.train_step()
            rate = c.batch_size / (time.perf_counter() - t0)
            ema = loss if ema is None else 0.9 * ema + 0.1 * loss
            self.history['step'].append(self.step)
            self.history['loss'].append(loss)
            self.history['lr'].append(self.scheduler.get_last_lr()[0])
            self.history['examples_per_s'].append(rate)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f'{ema:.3f}', ex_s=f'{rate:.2f}')
            if c.eval_every and (self.step % c.eval_every == 0 or self.step == c.steps):
                self.evals.append({'step': self.step, **self.evaluate()})
                self.write_report()
            if c.checkpoint_every and (self.step % c.checkpoint_every == 0 or self.step == last):
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        rates = self.history['examples_per_s'][1:] or self.history['examples_per_s']
        summary = {'step': self.step, 'examples_per_s': float(np.median(rates)) if rates else None}
        if self.step >= c.steps:
            final = self.save_final(c.output / 'model')
            summary['model'] = str(final)
        self.write_report()
        return summary

    # -- evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, rows: Optional[Sequence[int]] = None) -> dict:
        """Held-out loss and teacher-forced metrics, per example kind."""
        c = self.config
        rows = list(self.held_rows if rows is None else rows)[:c.eval_examples]
        self.model.eval()
        out = {}
        for kind in (REASONING, TRAJECTORY):
            metrics = PartMetrics(self.token_bytes)
            total, count = 0.0, 0
            for i in range(0, len(rows), max(1, c.batch_size)):
                chunk = rows[i:i + max(1, c.batch_size)]
                examples, batch = self.make_batch(chunk, [kind] * len(chunk))
                b = self._to_device(batch)
                res = self.model(input_ids=b['input_ids'], images=b['images'], image_masks=b['image_masks'],
                                 pooled_patches_idx=b['pooled_patches_idx'], attention_mask=b['attention_mask'],
                                 use_cache=False, output_hidden_states=True, logits_to_keep=1)
                hidden = res.hidden_states[-1]
                for j, e in enumerate(examples):
                    labels = b['labels'][j:j + 1]
                    states, targets = gather_answer_states(hidden[j:j + 1], labels, IGNORE_INDEX)
                    if self.rows is not None:
                        nll = self.rows.loss(states, targets, reduction='sum')
                        pred = self.rows.argmax(states)
                    else:
                        logits = self._lm_head()(states).float()
                        nll = F.cross_entropy(logits, targets, reduction='sum')
                        pred = logits.argmax(-1)
                    total += float(nll)
                    count += int(targets.numel())
                    metrics.add(e.answer_text, targets.tolist(), pred.tolist())
            out[kind] = {'loss': total / max(count, 1), **metrics.result()}
        self.model.train()
        return out

    # -- saving ----------------------------------------------------------------------------------
    def _unwrapped(self):
        model = self.model
        return model.get_base_model() if hasattr(model, 'get_base_model') else model

    def save_checkpoint(self) -> Path:
        c = self.config
        root = c.output / 'checkpoints'
        final = root / f'step-{self.step:07d}'
        tmp = root / f'.tmp-step-{self.step:07d}'
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        if self.rows is not None:
            self.rows.write_back()
        if c.lora_rank:
            self.model.save_pretrained(tmp / 'adapter')
            base = self._unwrapped()
            with _lora_disabled(self.model):
                _save_model(base, self.processor, tmp / 'base')
        else:
            _save_model(self.model, self.processor, tmp / 'model')
        state = {'step': self.step, 'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                 'rng': _rng_state(), 'history': self.history, 'evals': self.evals, 'config': c.to_json()}
        if self.rows is not None:
            state['embed_ids'] = self.rows.embed_ids.tolist()
            state['head_ids'] = self.rows.head_ids.tolist()
        torch.save(state, tmp / STATE_FILE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        kept = sorted(p for p in root.glob('step-*') if p.is_dir())
        for old in kept[:-max(1, c.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def save_final(self, directory: Path) -> Path:
        """The trained model in the released layout with the dataset's norm stats (LoRA merged in)."""
        if self.rows is not None:
            self.rows.write_back()
        model = self.model
        if self.config.lora_rank:
            import copy
            model = copy.deepcopy(self.model).merge_and_unload()
        model.config.norm_stats = dict(self.dataset.norm_stats)
        model.config.use_cache = True
        directory = Path(directory)
        _save_model(model, self.processor, directory)
        model.config.use_cache = False
        (directory / 'README.md').write_text(
            f'# MolmoAct trained by molmoact_ros\n\nTrained here with `train_molmoact` (base: {self.config.base}) '
            f'on the dataset {self.dataset.name} ({len(self.dataset)} examples, {len(self.dataset.episodes())} '
            f'episodes), {self.step} steps. Not MolmoAct-7B. norm_stats key: {self.dataset.key!r}.\n')
        filler_seed, tokenizer = self._lineage()
        (directory / 'molmoact_training.json').write_text(json.dumps({
            'trained_by': 'molmoact_ros.training.train', 'steps': self.step, 'dataset': str(self.dataset.root),
            'dataset_key': self.dataset.key, 'config': self.config.to_json(),
            'filler_seed': filler_seed, 'tokenizer': tokenizer,
            'last_eval': self.evals[-1] if self.evals else None}, indent=2) + '\n')
        return directory

    def write_report(self) -> None:
        c = self.config
        data = {'history': self.history, 'evals': self.evals, 'config': c.to_json()}
        (c.output / 'metrics.json').write_text(json.dumps(data, indent=1) + '\n')
        try:
            plot_curves(self.history, self.evals, c.output / 'training_curves.png')
        except Exception as error:  # noqa: BLE001 - a plot must not stop training
            self.log(f'could not draw the curves: {error}')


def init_connector(model) -> None:
    """LeCun-normal weights (std 1/sqrt(fan_in)) for the image connector (attention pooling + SwiGLU projector)
    of a model trained from scratch. With transformers' default std 0.02 the projector's gated product of two
    small terms makes the image features ~1e-5 in norm (token embeddings: ~0.3): a 128-wide model then learns
    to answer without looking at the image and never recovers (measured here: the loss did not change when
    the image was swapped or zeroed after 750 steps). With this init they start at ~0.2."""
    vision = model.model.vision_backbone
    with torch.no_grad():
        for module in list(vision.image_pooling_2d.modules()) + list(vision.image_projector.modules()):
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=1.0 / math.sqrt(module.weight.shape[1]))


LORA_TARGETS = ['att_proj', 'attn_out', 'ff_proj', 'ff_out']


class _lora_disabled:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.ctx = self.model.disable_adapter()
        return self.ctx.__enter__()

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


def _save_model(model, processor: MolmoActProcessor, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    gen = model.generation_config
    gen.bos_token_id = gen.eos_token_id = gen.pad_token_id = ENDOFTEXT_ID
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def plot_curves(history: dict, evals: list, path: Path) -> None:
    """Training loss (and its running mean), held-out losses and per-part metrics as a PNG (Pillow)."""
    from PIL import Image, ImageDraw

    w, h, pad = 900, 620, 50
    img = Image.new('RGB', (w, h), 'white')
    d = ImageDraw.Draw(img)

    def panel(y0, y1, series, title, log_y=False):
        d.rectangle([pad, y0, w - 20, y1], outline='black')
        d.text((pad + 4, y0 + 4), title, fill='black')
        xs_all = [x for s in series for x in s[0]]
        ys_all = [v for s in series for v in s[1] if v is not None and np.isfinite(v)]
        if not xs_all or not ys_all:
            return
        tf = (lambda v: math.log10(max(v, 1e-6))) if log_y else (lambda v: v)
        lo, hi = min(tf(v) for v in ys_all), max(tf(v) for v in ys_all)
        hi = hi if hi > lo else lo + 1
        x0, x1 = min(xs_all), max(max(xs_all), min(xs_all) + 1)
        d.text((4, y0), f'{(10 ** hi if log_y else hi):.3g}', fill='black')
        d.text((4, y1 - 12), f'{(10 ** lo if log_y else lo):.3g}', fill='black')
        d.text((pad, y1 + 2), f'step {x0}', fill='black')
        d.text((w - 120, y1 + 2), f'step {x1}', fill='black')
        for k, (xs, ys, colour, label) in enumerate(series):
            pts = [(pad + (x - x0) / (x1 - x0) * (w - 20 - pad), y1 - (tf(v) - lo) / (hi - lo) * (y1 - y0 - 20))
                   for x, v in zip(xs, ys) if v is not None and np.isfinite(v)]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=1 if label == 'train loss' else 2)
            elif pts:
                d.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=colour)
            d.text((w - 260, y0 + 4 + 12 * k), label, fill=colour)

    steps, losses = history.get('step', []), history.get('loss', [])
    smooth, acc = [], None
    for v in losses:
        acc = v if acc is None else 0.95 * acc + 0.05 * v
        smooth.append(acc)
    es = [e['step'] for e in evals]
    loss_series = [(steps, losses, (170, 170, 170), 'train loss'), (steps, smooth, (0, 0, 0), 'train loss (EMA)')]
    for kind, colour in ((REASONING, (200, 0, 0)), (TRAJECTORY, (0, 0, 200))):
        loss_series.append((es, [e.get(kind, {}).get('loss') for e in evals], colour, f'held-out loss {kind}'))
    panel(20, 300, loss_series, 'loss (log scale)', log_y=True)
    metric_series = []
    for key, colour in (('answer_token_accuracy', (0, 0, 0)), ('depth_code_accuracy', (150, 75, 0)),
                        ('action_bin_accuracy_pm2', (200, 0, 0))):
        metric_series.append((es, [e.get(REASONING, {}).get(key) for e in evals], colour, f'{key} (reasoning)'))
    metric_series.append((es, [e.get(TRAJECTORY, {}).get('action_bin_accuracy_pm2') for e in evals], (0, 0, 200),
                          'action_bin_accuracy_pm2 (trajectory)'))
    metric_series.append((es, [(e.get(REASONING, {}).get('trace_end_error') or 0) / 255.0 for e in evals],
                          (0, 150, 0), 'trace end error / 255 (reasoning)'))
    panel(340, 600, metric_series, 'held-out metrics (teacher forcing)')
    img.save(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='train_molmoact', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('dataset', type=Path, help='a dataset written by build_dataset')
    p.add_argument('output', type=Path, help='run directory (checkpoints/, model/, metrics.json, curves)')
    p.add_argument('--base', default='scratch', help='scratch (a small model, ModelSpec), tiny, or a checkpoint '
                   'directory / hub id to fine-tune')
    for name in ('image_size', 'vit_width', 'vit_layers', 'llm_width', 'llm_layers', 'mlp'):
        p.add_argument('--' + name.replace('_', '-'), type=int, default=getattr(ModelSpec(), name))
    p.add_argument('--steps', type=int, default=2000)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--warmup-steps', type=int, default=100)
    p.add_argument('--weight-decay', type=float, default=0.01)
    p.add_argument('--grad-clip', type=float, default=1.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--trajectory-fraction', type=float, default=0.3,
                   help='fraction of trajectory-conditioned (trace drawn, actions only) examples')
    p.add_argument('--held-out-fraction', type=float, default=0.1, help='fraction of episodes held out')
    p.add_argument('--eval-every', type=int, default=200)
    p.add_argument('--eval-examples', type=int, default=32)
    p.add_argument('--checkpoint-every', type=int, default=200)
    p.add_argument('--keep-checkpoints', type=int, default=2)
    p.add_argument('--loss', choices=LOSS_MODES, default='restricted')
    p.add_argument('--answer-template', default='dataset', help="'dataset' (the dataset's answer text) or a "
                   'grammar template name (multi_view, single_view, finetune)')
    p.add_argument('--lora-rank', type=int, default=0, help='LoRA rank (peft); 0 trains every parameter')
    p.add_argument('--lora-alpha', type=int, default=16)
    p.add_argument('--lora-dropout', type=float, default=0.0)
    p.add_argument('--dtype', choices=('float32', 'bfloat16', 'float16'), default='float32')
    p.add_argument('--gradient-checkpointing', action='store_true')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--resume', action='store_true', help='continue from the last checkpoint in OUTPUT')
    p.add_argument('--stop-after', type=int, default=None, help='stop after this step (a later --resume goes on)')
    p.add_argument('--no-progress', action='store_true')
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    spec = ModelSpec(image_size=args.image_size, vit_width=args.vit_width, vit_layers=args.vit_layers,
                     llm_width=args.llm_width, llm_layers=args.llm_layers, mlp=args.mlp)
    config = TrainConfig(
        dataset=args.dataset, output=args.output, base=args.base, spec=spec, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        grad_clip=args.grad_clip, seed=args.seed, trajectory_fraction=args.trajectory_fraction,
        held_out_fraction=args.held_out_fraction, eval_every=args.eval_every, eval_examples=args.eval_examples,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, loss=args.loss,
        answer_template=args.answer_template, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout, dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing,
        device=args.device, threads=args.threads, progress=not args.no_progress, stop_after=args.stop_after)
    start = time.perf_counter()
    trainer = Trainer(config, resume=args.resume)
    n_body = sum(p.numel() for p in trainer.trainable_parameters())
    print(f'dataset: {trainer.dataset.root} ({len(trainer.dataset)} examples, {len(trainer.train_rows)} train, '
          f'{len(trainer.held_rows)} held out); trainable parameters: {n_body}')
    summary = trainer.run()
    print(f'steps: {summary["step"]} steps')
    if summary['examples_per_s'] is not None:
        print(f'train_examples_per_s: {summary["examples_per_s"]:.3f} examples/s')
    print(f'wall_time: {time.perf_counter() - start:.1f} s')
    if trainer.evals:
        for kind, values in trainer.evals[-1].items():
            if isinstance(values, dict):
                for key, value in values.items():
                    if value is not None:
                        print(f'heldout_{kind}_{key}: {value:.4f}')
    if 'model' in summary:
        print(f'model: {summary["model"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
