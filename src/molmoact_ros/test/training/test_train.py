"""train_molmoact on a tiny synthetic dataset (written with the builder's functions) and a tiny model spec."""

import json
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from molmoact_ros.model.processing import PromptVariant, build_prompt, chat_text
from molmoact_ros.reasoning import grammar
from molmoact_ros.reasoning.steering import draw_trace
from molmoact_ros.training.data import IGNORE_INDEX, REASONING, TRAJECTORY, encode_example
from molmoact_ros.training.metrics import PartMetrics
from molmoact_ros.training.synthetic import write_synthetic_dataset
from molmoact_ros.training.train import ModelSpec, TrainConfig, Trainer
from molmoact_ros.training.vocab_rows import gather_answer_states, restricted_argmax

SPEC = ModelSpec(image_size=56, vit_width=32, vit_layers=3, vit_heads=2, llm_width=32, llm_layers=2, llm_heads=4,
                 llm_kv_heads=2, mlp=64)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp('train') / 'ds', episodes=3, steps=5, horizon=2,
                                   width=64, height=48)


def _config(dataset, out, **kw):
    base = dict(dataset=dataset, output=out, spec=SPEC, steps=4, batch_size=2, lr=3e-3, warmup_steps=1,
                eval_every=0, checkpoint_every=2, eval_examples=2, progress=False, held_out_fraction=0.34,
                threads=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope='module')
def trained(dataset, tmp_path_factory):
    """A 4-step restricted-loss run with its final model saved."""
    out = tmp_path_factory.mktemp('run')
    trainer = Trainer(_config(dataset, out, eval_every=4), log=lambda m: None)
    summary = trainer.run()
    return trainer, summary, out


def _batch(trainer, kinds=(REASONING, TRAJECTORY)):
    rows = trainer.train_rows[:len(kinds)]
    return trainer.make_batch(rows, list(kinds))


def test_labels_cover_the_answer_and_eos_only(trained):
    trainer, _, _ = trained
    examples, batch = _batch(trainer)
    tok = trainer.processor
    for j, e in enumerate(examples):
        labels = batch['labels'][j]
        assert (labels[:e.answer_start] == IGNORE_INDEX).all()       # BOS, image tokens, prompt text
        answer = tok.encode_text(e.answer_text) + [tok.token_ids.eos]
        assert labels[e.answer_start:e.answer_start + len(answer)].tolist() == answer
        assert (labels[e.answer_start + len(answer):] == IGNORE_INDEX).all()  # right padding


def test_loss_counts_answer_tokens_only(trained):
    """The loss is the mean NLL over answer positions: prompt labels do not enter it (setting them to real ids
    with -100 restored changes nothing; marking them -100 vs leaving the trainer's batch is identical), and
    changing one answer label changes it."""
    trainer, _, _ = trained
    _, batch = _batch(trainer)
    saved = trainer.rows.head_rows.detach().clone()
    try:
        _loss_checks(trainer, batch)
    finally:
        with torch.no_grad():
            trainer.rows.head_rows.copy_(saved)


def _loss_checks(trainer, batch):
    with torch.no_grad():
        trainer.rows.head_rows.mul_(50.0)  # distinct logits (a 4-step model is close to uniform)
        base = trainer.loss_on(batch)
        # Inputs unchanged, labels of prompt positions scribbled then masked again: same loss.
        other = dict(batch)
        labels = batch['labels'].clone()
        prompt = labels == IGNORE_INDEX
        scribbled = torch.where(prompt, torch.randint(0, 1000, labels.shape), labels)
        other['labels'] = torch.where(prompt, torch.full_like(labels, IGNORE_INDEX), scribbled)
        assert torch.equal(trainer.loss_on(other), base)
        # The answer labels changed (every one of the first example to another answer id): the loss changes.
        changed = batch['labels'].clone()
        answer = changed[0] != IGNORE_INDEX
        changed[0, answer] = torch.where(changed[0, answer] == trainer.rows.head_ids[0], trainer.rows.head_ids[1],
                                         trainer.rows.head_ids[0])
        assert abs(float(trainer.loss_on({**batch, 'labels': changed})) - float(base)) > 1e-4


def test_restricted_loss_equals_full_vocabulary_cross_entropy(trained):
    trainer, _, _ = trained
    trainer.rows.write_back()
    model = trainer.model
    assert (model.lm_head.weight.abs().sum(1) != 0).sum() <= trainer.rows.head_ids.numel()
    _, batch = _batch(trainer)
    with torch.no_grad():
        restricted = trainer.loss_on(batch)
        # The model's own full-logit loss (every position, 152,064 columns, labels -100 outside the answer).
        full = model(input_ids=batch['input_ids'], images=batch['images'], image_masks=batch['image_masks'],
                     pooled_patches_idx=batch['pooled_patches_idx'], attention_mask=batch['attention_mask'],
                     labels=batch['labels'], use_cache=False)
        hidden = model(input_ids=batch['input_ids'], images=batch['images'], image_masks=batch['image_masks'],
                       pooled_patches_idx=batch['pooled_patches_idx'], attention_mask=batch['attention_mask'],
                       use_cache=False, output_hidden_states=True).hidden_states[-1]
        states, targets = gather_answer_states(hidden, batch['labels'])
        exact = F.cross_entropy(states.double() @ model.lm_head.weight.double().t(), targets)
    assert model.lm_head.weight.shape[0] == 152064
    assert abs(float(restricted) - float(exact)) < 1e-5      # against a float64 full-vocabulary reference
    assert abs(float(restricted) - float(full.loss)) < 1e-4  # the model's own float32 full-logit loss
    # The restricted argmax is the full-vocabulary argmax, with outside rows' exact zeros.
    states = torch.randn(50, SPEC.llm_width) * 0.01
    full_logits = model.lm_head(states)
    assert torch.equal(restricted_argmax(states, trainer.rows.head_rows, trainer.rows.head_ids, 152064),
                       full_logits.argmax(-1))


def test_trajectory_examples_are_what_the_engines_drawn_stage_reads(trained):
    trainer, _, _ = trained
    row = trainer.dataset.rows[0]
    proc = trainer.processor
    e = encode_example(proc, row, TRAJECTORY)
    lead_in = ' ' + grammar.TRAJECTORY_CONDITIONED_TEMPLATE.action_sentence.split('{action}')[0].rstrip()
    answer_ids = e.input_ids[e.answer_start:].tolist()
    lead_ids = proc.encode_text(lead_in)
    assert answer_ids[:len(lead_ids)] == lead_ids and answer_ids[-1] == proc.token_ids.eos
    parsed = grammar.parse_answer(e.answer_text, 7, horizon=len(row.action_bins), parts=('actions',))
    assert not parsed.errors and [list(b) for b in parsed.actions.bins] == [list(b) for b in row.action_bins]
    # The prompt is the steering prompt on the image with the trace drawn as the engine draws it.
    drawn = draw_trace(row.image(), row.trace)
    expect = proc(chat_text(build_prompt(row.instruction, PromptVariant.TRAJECTORY_MULTI_VIEW)), [drawn],
                  return_tensors='np')
    assert e.input_ids[:e.answer_start].tolist() == expect['input_ids'][0].tolist()
    assert np.array_equal(e.images, expect['images'][0])
    assert not np.array_equal(drawn, row.image())
    # Reasoning examples: the dataset's full answer (depth, trace, actions) on the plain image.
    r = encode_example(proc, row, REASONING)
    assert r.answer_text == row.answer and '<DEPTH_START>' in r.answer_text
    # The mixture: about the configured fraction of trajectory examples.
    kinds = [k for s in range(200) for k in trainer.batch_plan(s)[1]]
    assert abs(kinds.count(TRAJECTORY) / len(kinds) - 0.3) < 0.05


def test_saved_model_reloads_with_its_norm_stats_and_identical_logits(trained, dataset):
    import json

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from molmoact_ros.model import register
    from molmoact_ros.model.loading import LoadOptions, load_model
    from molmoact_ros.reasoning.action_space import NormStatsTable

    trainer, summary, out = trained
    model_dir = out / 'model'
    for name in ('config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json',
                 'preprocessor_config.json', 'processor_config.json'):
        assert (model_dir / name).is_file(), name
    register()
    auto = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    loaded = load_model(model_dir, LoadOptions(dtype='float32', device='cpu'))
    stats = json.loads((dataset / 'dataset_statistics.json').read_text())
    assert loaded.config.norm_stats == stats
    # The engine's action_horizon 0 takes the dataset's steps per answer from the checkpoint (2 here).
    from molmoact_ros.nodes.engine_provider import checkpoint_horizon
    assert loaded.config.action_horizon == 2 and checkpoint_horizon(loaded.config, 0) == 2
    assert checkpoint_horizon(loaded.config, 5) == 5
    assert checkpoint_horizon(type('Released', (), {})(), 0) == 1
    # Intermediate checkpoints carry them too (a run can be evaluated before it ends).
    ckpt = sorted((out / 'checkpoints').glob('step-*'))[-1] / 'model'
    ckpt_config = json.loads((ckpt / 'config.json').read_text())
    assert ckpt_config['norm_stats'] == stats and ckpt_config['action_horizon'] == 2
    assert NormStatsTable.from_checkpoint_config(loaded.config).select('molmoact').dim == 7
    processor = AutoProcessor.from_pretrained(model_dir)
    assert processor.image_processor.config.crop_mode == 'resize'
    trainer.rows.write_back()
    trainer.model.eval()
    _, batch = _batch(trainer)
    inputs = {k: batch[k] for k in ('input_ids', 'images', 'image_masks', 'pooled_patches_idx', 'attention_mask')}
    with torch.no_grad():
        ref = trainer.model(**inputs, use_cache=False).logits
        for m in (auto, loaded):
            assert torch.equal(m(**inputs, use_cache=False).logits, ref)
    # The run wrote its held-out metrics and curves.
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['evals'][-1]['step'] == 4 and 'depth_code_accuracy' in metrics['evals'][-1][REASONING]
    assert (out / 'training_curves.png').stat().st_size > 1000


def test_resumed_run_continues_from_its_step_and_matches_an_uninterrupted_run(dataset, tmp_path):
    straight = Trainer(_config(dataset, tmp_path / 'a', steps=3, checkpoint_every=0), log=lambda m: None)
    straight.run()
    first = Trainer(_config(dataset, tmp_path / 'b', steps=3, stop_after=2), log=lambda m: None)
    first.run()
    assert first.step == 2 and not (tmp_path / 'b' / 'model').exists()
    resumed = Trainer(_config(dataset, tmp_path / 'b', steps=3), resume=True, log=lambda m: None)
    assert resumed.step == 2 and resumed.scheduler.last_epoch == 2
    assert resumed.optimizer.state_dict()['state'][0]['step'] == first.optimizer.state_dict()['state'][0]['step']
    resumed.run()
    assert resumed.step == 3 and resumed.history['step'] == [1, 2, 3]
    assert resumed.history['loss'][:2] == straight.history['loss'][:2]
    assert abs(resumed.history['loss'][2] - straight.history['loss'][2]) < 1e-6
    assert (tmp_path / 'b' / 'model' / 'model.safetensors').is_file()


def test_lora_trains_and_merges(trained, dataset, tmp_path):
    pytest.importorskip('peft')
    _, _, out = trained
    cfg = _config(dataset, tmp_path / 'lora', base=str(out / 'model'), loss='answer', lora_rank=4, lora_alpha=8,
                  steps=8, lr=3e-2, checkpoint_every=0, trajectory_fraction=1.0, held_out_fraction=0.0)
    trainer = Trainer(cfg, log=lambda m: None)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all('lora_' in n for n in trainable)
    trainer.train_rows = trainer.train_rows[:2]  # one fixed batch
    _, batch = trainer.make_batch(trainer.train_rows, [TRAJECTORY, TRAJECTORY])
    with torch.no_grad():
        before = float(trainer.loss_on(batch))
    trainer.run()
    trainer.model.eval()
    with torch.no_grad():
        after = float(trainer.loss_on(batch))
        inputs = {k: batch[k] for k in ('input_ids', 'images', 'image_masks', 'pooled_patches_idx', 'attention_mask')}
        adapted = trainer.model(**inputs, use_cache=False).logits
    assert after < before - 0.1
    from molmoact_ros.model.loading import LoadOptions, load_model
    merged = load_model(tmp_path / 'lora' / 'model', LoadOptions(dtype='float32', device='cpu'))
    assert not any('lora' in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(**inputs, use_cache=False).logits, adapted, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(trained):
    trainer, _, _ = trained
    model = trainer.model
    _, batch = _batch(trainer)
    model.train()
    grads = []
    for enable in (False, True):
        if enable:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
        model.zero_grad()
        trainer.loss_on(batch).backward()
        grads.append(model.model.transformer.blocks[0].mlp.ff_out.weight.grad.clone())
    model.gradient_checkpointing_disable()
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0


def test_compact_export_round_trip(trained, tmp_path):
    from safetensors.torch import load_file

    from molmoact_ros.model.loading import LoadOptions, load_model
    from molmoact_ros.training.compact import assemble_checkpoint, export_compact, fp16_rounded

    trainer, _, out = trained
    meta = export_compact(out / 'model', tmp_path / 'compact')
    size = sum(f.stat().st_size for f in (tmp_path / 'compact').iterdir())
    # Only rows training touched (a subset of the rows the data uses) are stored.
    assert size < 16e6 and 0 < meta['embedding_rows'] <= trainer.rows.embed_ids.numel() - int(
        (trainer.rows.embed_ids >= 152064).sum())
    assert meta['head_rows'] <= trainer.rows.head_ids.numel()
    assembled = assemble_checkpoint(tmp_path / 'compact', tmp_path / 'assembled')
    model = load_model(assembled, LoadOptions(dtype='float32', device='cpu'))
    ref = load_model(out / 'model', LoadOptions(dtype='float32', device='cpu'))
    ref.load_state_dict(fp16_rounded(load_file(str(out / 'model' / 'model.safetensors'))))
    _, batch = _batch(trainer)
    inputs = {k: batch[k] for k in ('input_ids', 'images', 'image_masks', 'pooled_patches_idx', 'attention_mask')}
    with torch.no_grad():
        assert torch.equal(model(**inputs, use_cache=False).logits, ref(**inputs, use_cache=False).logits)
    assert model.config.norm_stats == ref.config.norm_stats


def test_a_model_fine_tuned_from_one_trained_here_keeps_its_compact_lineage(trained, dataset, tmp_path):
    from molmoact_ros.training.compact import export_compact

    _, _, out = trained
    tuned = Trainer(_config(dataset, tmp_path / 'tuned', base=str(out / 'model'), steps=1, checkpoint_every=0),
                    log=lambda m: None)
    tuned.run()
    info = json.loads((tmp_path / 'tuned' / 'model' / 'molmoact_training.json').read_text())
    base = json.loads((out / 'model' / 'molmoact_training.json').read_text())
    assert info['tokenizer'] == 'build_molmoact_tokenizer' and info['filler_seed'] == base['filler_seed']
    meta = export_compact(tmp_path / 'tuned' / 'model', tmp_path / 'compact')
    # The tokenizer (~11 MB) is rebuilt on assembly, not stored; the untouched rows stay the filler.
    assert meta['tokenizer'] == 'build_molmoact_tokenizer' and not (tmp_path / 'compact' / 'tokenizer.json').exists()
    assert meta['filler_seed'] == base['filler_seed'] and meta['embedding_rows'] < 10_000


def test_part_metrics_of_a_perfect_prediction(trained):
    trainer, _, _ = trained
    row = trainer.dataset.rows[0]
    proc = trainer.processor
    ids = proc.encode_text(row.answer) + [proc.token_ids.eos]
    m = PartMetrics(trainer.token_bytes)
    m.add(row.answer, ids, ids)
    r = m.result()
    assert r['answer_token_accuracy'] == 1.0 and r['depth_code_accuracy'] == 1.0
    assert r['trace_end_error'] == 0.0 and r['action_bin_accuracy_pm2'] == 1.0 and r['action_bin_exact'] == 1.0
    assert m.act_n == 7 * len(row.action_bins) and m.depth_n == 100
    # A wrong last trace digit gives a measured end-point error; an EOS in place of a depth code is a miss.
    wrong = list(ids)
    first_code = next(i for i, t in enumerate(ids) if t >= proc.token_ids.depth_code_base)
    wrong[first_code] = proc.token_ids.eos
    m2 = PartMetrics(trainer.token_bytes)
    m2.add(row.answer, ids, wrong)
    assert m2.result()['depth_code_accuracy'] == 0.99


def test_a_model_from_scratch_gets_image_features_of_the_size_of_token_embeddings(dataset, tmp_path):
    """The connector's init (init_connector): with transformers' default (std 0.02) the projector's gated
    product makes the image features ~1e-4 of the token embeddings, and a model trained here learned to answer
    without the image (its loss did not change when the image was swapped); with LeCun-normal weights they
    start within an order of magnitude of the embeddings."""
    from molmoact_ros.model.modeling import MolmoActForActionReasoning
    from molmoact_ros.training.train import init_connector, small_config

    trainer = Trainer(_config(dataset, tmp_path), log=lambda m: None)
    _, batch = _batch(trainer, (REASONING, REASONING))
    torch.manual_seed(0)
    default = MolmoActForActionReasoning(small_config(SPEC)).eval()

    def feature_norm(model):
        with torch.no_grad():
            feats = model.model.vision_backbone(batch['images'], batch['pooled_patches_idx'], batch['image_masks'])
        return float(feats.norm(dim=-1).mean())

    with torch.no_grad():
        embeds = float(trainer.model.model.transformer.wte(batch['input_ids'].clamp(min=0)).norm(dim=-1).mean())
    assert feature_norm(default) < 1e-3 * embeds
    assert feature_norm(trainer.model.eval()) > 0.05 * embeds
    init_connector(default)
    assert feature_norm(default) > 0.05 * embeds


def test_a_bundled_compact_model_resolves_by_name_into_an_engine_with_its_own_settings(trained, tmp_path,
                                                                                     monkeypatch):
    """The path a model trained here takes to the nodes: compact weights in the package (engine_provider's
    bundled dir) -> assembled once into the model cache -> an engine with the checkpoint's action horizon,
    answer template and norm stats, and the row-sparse output layer."""
    from molmoact_ros.model.loading import RowSparseHead
    from molmoact_ros.nodes import engine_provider as ep
    from molmoact_ros.training.compact import export_compact

    _, _, out = trained
    compact = tmp_path / 'weights' / 'sim_lift'
    export_compact(out / 'model', compact)
    monkeypatch.setattr(ep, 'bundled_weights_dir', lambda name=ep.SIM_LIFT: compact)
    monkeypatch.setenv('MOLMOACT_MODEL_CACHE', str(tmp_path / 'cache'))
    path = ep.resolve_model(ep.SIM_LIFT)
    assert path.startswith(str(tmp_path / 'cache')) and ep.resolve_model(ep.SIM_LIFT) == path  # assembled once
    assert ep.model_action_horizon(ep.SIM_LIFT) == 2
    settings = {p.name: p.default for p in ep.ENGINE_PARAMETERS}
    settings.update(model=ep.SIM_LIFT, device='cpu')
    engine = ep.EngineProvider._load(settings)
    assert engine.config.horizon == 2 and engine.config.answer_template == 'finetune'
    assert isinstance(engine.model.lm_head, RowSparseHead) and engine.unnorm_key == 'molmoact'
    monkeypatch.setattr(ep, 'bundled_weights_dir', lambda name=ep.SIM_LIFT: tmp_path / 'absent')
    with pytest.raises(FileNotFoundError, match='no weights'):
        ep.resolve_model(ep.SIM_LIFT)
