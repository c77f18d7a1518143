"""Cases and runners of the vLLM parity test (test_vllm_parity.py); also a script.

The script half runs MolmoAct on vLLM (``vllm.LLM``, fp32, eager, greedy) over :data:`CASES` and writes
what it generated as JSON; the engine starts worker processes with spawn, so it runs in a process of its
own, started by the test:

    python vllm_parity_cases.py --checkpoint DIR --output results.json [--tokens 24]

The native half (:func:`native_greedy`) runs the same cases through this package's model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

#: The test model: the tiny random-weight MolmoAct (real vocabulary, released layout) with head_dim 32 in
#: the ViT, the pooling attention and the LLM (vLLM's CPU attention rejects head_dim 16).
SPEC_KWARGS = dict(vit_width=64, vit_layers=4, vit_heads=2, llm_width=128, llm_layers=2, llm_heads=4,
                   llm_kv_heads=2, mlp=256)
MAX_MODEL_LEN = 4096


@dataclass(frozen=True)
class Case:
    name: str
    instruction: str
    sizes: Tuple[Tuple[int, int], ...]  # (height, width) of each view
    seed: int
    bare: bool = False                  # one bare image (single-image mode) instead of a tuple of views
    variant: str = 'multi_view'
    answer_prefix: str = ''             # text the answer already holds (sent as token ids)


CASES = (
    Case('one_view_224', 'pick up the red cup', ((224, 224),), seed=1),
    Case('one_view_224_other_image', 'pick up the red cup', ((224, 224),), seed=2),
    Case('one_view_224_other_instruction', 'open the top drawer', ((224, 224),), seed=1),
    Case('bare_240x320_single_view', 'push the green block to the left', ((240, 320),), seed=3, bare=True,
         variant='single_view'),
    Case('two_views_480x640_and_wrist', 'put the bowl on the plate', ((480, 640), (224, 224)), seed=4),
    Case('continuation_as_token_ids', 'stack the blocks', ((256, 256),), seed=5,
         answer_prefix=' The depth map of the first image is <DEPTH_START><DEPTH_7><DEPTH_100>'),
)


#: Cases of the structured-output check (the depth stage from the start of the answer).
STRUCTURED_CASES = tuple(case for case in CASES if not case.answer_prefix)
DEPTH_MAX_TOKENS = 200  # the depth stage takes at most 64 free tokens + 102


def build_checkpoint(path: Path) -> Path:
    """Save the test model in the released layout (config.json, model.safetensors, tokenizer and
    processor files) as the native model saves it."""
    from molmoact_ros.model.tiny import TinySpec, save_tiny_checkpoint

    return save_tiny_checkpoint(Path(path), seed=0, spec=TinySpec(**SPEC_KWARGS))


def observation(case: Case):
    rng = np.random.default_rng(case.seed)
    views = tuple(rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in case.sizes)
    return views[0] if case.bare else views


def chat(case: Case) -> str:
    from molmoact_ros.model.processing import build_prompt, chat_text

    return chat_text(build_prompt(case.instruction, case.variant))


def vllm_prompt(case: Case, tokenizer) -> Dict:
    """The request: the native processor's text (no BOS, no image tokens), or, with an answer prefix, its
    token ids followed by the prefix's (as the native engine appends answer ids)."""
    data = {'multi_modal_data': {'image': observation(case)}}
    if case.answer_prefix:
        ids = tokenizer.encode(chat(case), add_special_tokens=False)
        ids += tokenizer.encode(case.answer_prefix, add_special_tokens=False)
        return {'prompt_token_ids': ids, **data}
    return {'prompt': chat(case), **data}


def native_greedy(model, processor, case: Case, n_tokens: int) -> Dict[str, List]:
    """The native model's greedy continuation (EOS not special: exactly ``n_tokens``), with the prompt ids
    and each chosen token's log-probability."""
    obs = observation(case)
    inputs = processor(chat(case), list(obs) if isinstance(obs, tuple) else obs)
    ids = inputs['input_ids']
    if case.answer_prefix:
        extra = processor.tokenizer.encode(case.answer_prefix, add_special_tokens=False)
        ids = torch.cat([ids, torch.tensor([extra], dtype=ids.dtype)], dim=1)
    tokens, logprobs = [], []
    with torch.no_grad():
        out = model(input_ids=ids, images=inputs['images'], pooled_patches_idx=inputs['pooled_patches_idx'],
                    image_masks=inputs['image_masks'], use_cache=True, logits_to_keep=1)
        for _ in range(n_tokens):
            logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            token = int(logp.argmax())
            tokens.append(token)
            logprobs.append(float(logp[token]))
            out = model(input_ids=torch.tensor([[token]]), cache=out.past_key_values, use_cache=True,
                        logits_to_keep=1)
    return {'prompt_token_ids': ids[0].tolist(), 'tokens': tokens, 'logprobs': logprobs}


def engine_config(case: Case):
    """The native engine's configuration for a case (the prompt variant, and single-image mode for a bare
    image)."""
    from molmoact_ros.reasoning.engine import EngineConfig

    return EngineConfig(prompt_variant=case.variant, multi_image=False if case.bare else None)


def native_depth_stage(engine, case: Case) -> List[int]:
    """The native engine's constrained depth stage (``perceive``): the answer's token ids."""
    from molmoact_ros.reasoning.engine import Observation

    obs = observation(case)
    views = (obs,) if case.bare else obs
    result = engine.perceive(Observation(*views), case.instruction, request_id=case.name)
    try:
        return list(engine.sessions.get(result.request_id).answer_ids)
    finally:
        engine.release(result.request_id)


def run_vllm(checkpoint: Path, n_tokens: int) -> Dict:
    """All cases in one batch, then the first case again (its prefix and image now cached); then the
    depth stage of :data:`STRUCTURED_CASES` under the depth grammar (structured outputs, llguidance)."""
    import molmoact_ros
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from molmoact_ros.model.processing import MolmoActProcessor
    from molmoact_ros.reasoning.constraints import ConstraintVocab
    from molmoact_ros.vllm_plugin.structured import depth_grammar

    start = time.monotonic()
    llm = LLM(model=str(checkpoint), dtype='float32', enforce_eager=True, max_model_len=MAX_MODEL_LEN,
              gpu_memory_utilization=0.1, enable_prefix_caching=True, seed=0,
              structured_outputs_config={'backend': 'guidance'})
    startup_s = time.monotonic() - start
    tokenizer = llm.get_tokenizer()
    params = SamplingParams(temperature=0.0, max_tokens=n_tokens, ignore_eos=True, logprobs=0)

    def record(output) -> Dict:
        completion = output.outputs[0]
        chosen = [step[token].logprob for step, token in zip(completion.logprobs, completion.token_ids)]
        return {'prompt_token_ids': list(output.prompt_token_ids), 'tokens': list(completion.token_ids),
                'logprobs': chosen}

    start = time.monotonic()
    outputs = llm.generate([vllm_prompt(case, tokenizer) for case in CASES], params, use_tqdm=False)
    batch_s = time.monotonic() - start
    start = time.monotonic()
    again = llm.generate([vllm_prompt(CASES[0], tokenizer)], params, use_tqdm=False)
    again_s = time.monotonic() - start
    vocab = ConstraintVocab.from_tokenizer(MolmoActProcessor.from_pretrained(checkpoint).tokenizer)
    # The stage ends at <DEPTH_END> (the grammar would then force EOS, one step more).
    depth = SamplingParams(temperature=0.0, max_tokens=DEPTH_MAX_TOKENS, stop_token_ids=[vocab.depth_end_id],
                           structured_outputs=StructuredOutputsParams(grammar=depth_grammar(vocab)))
    start = time.monotonic()
    depth_outputs = llm.generate([vllm_prompt(case, tokenizer) for case in STRUCTURED_CASES], depth,
                                 use_tqdm=False)
    depth_s = time.monotonic() - start
    return {
        'depth': {case.name: {'tokens': list(out.outputs[0].token_ids),
                              'finish_reason': out.outputs[0].finish_reason}
                  for case, out in zip(STRUCTURED_CASES, depth_outputs)},
        'depth_s': depth_s,
        'cases': {case.name: record(out) for case, out in zip(CASES, outputs)},
        'repeat': {CASES[0].name: record(again[0])},
        'startup_s': startup_s, 'batch_s': batch_s, 'repeat_s': again_s,
        'vllm_version': vllm.__version__, 'molmoact_ros_file': molmoact_ros.__file__,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', type=Path, required=True)
    parser.add_argument('--output', type=Path, required=True)
    parser.add_argument('--tokens', type=int, default=24)
    parser.add_argument('--build', action='store_true', help='build the test checkpoint first')
    args = parser.parse_args(argv)
    if args.build:
        build_checkpoint(args.checkpoint)
    args.output.write_text(json.dumps(run_vllm(args.checkpoint, args.tokens), indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
