"""The staged MolmoAct engine: perceive -> plan -> act as three calls over one generation.

MolmoAct writes depth tokens, then a trace, then actions, in one autoregressive answer. The engine runs
that answer in three stages so that three ROS nodes can each own one:

* :meth:`MolmoActEngine.perceive` prefills image + prompt and decodes up to ``<DEPTH_END>``;
* :meth:`MolmoActEngine.plan` continues from the same KV cache up to the end of the trace;
* :meth:`MolmoActEngine.act` continues up to the end of the actions, or acts on an edited trace.

Each request keeps its KV cache in a bounded :class:`~molmoact_ros.reasoning.sessions.SessionStore`, so the
three stages cost what one generation costs. A stage in another process rebuilds the prefix from a
message's content with :meth:`MolmoActEngine.resume` (image + instruction + the answer text so far) and
pays one prefill. Decoding is greedy (as the released code) and, by default, grammar-constrained per stage
(:mod:`~molmoact_ros.reasoning.constraints`), so every stage's output parses.

Speed, with the same tokens as one greedy pass per token (tests check it stage by stage):

* grammar fast-forwarding (``EngineConfig.fast_forward``): after each chosen token, the tokens the grammar
  then forces (``<DEPTH_START>`` once the free text is spent, ``<DEPTH_END>``, the ``,`` after a spaced
  action value, the last byte piece of an action string ...) go into the same forward pass;
* the chunk that ends an answer is not fed (its next-token logits would be unused);
* identical crops (``EngineConfig.dedupe_crops``): frames up to 378 px get a 1x1 tiling whose crop equals
  the global view; the ViT encodes it once.

Canonical action tokenization (``EngineConfig.canonical_actions``, default on) changes which tokens the action
list may use (its text is the released form, without optional extra spaces): only the split the model's
tokenizer gives ``[a, b, ...]`` (what a trained model emits, ~3.2 tokens per value), instead of any split of
the same bytes (a random-weight model picks ~4-6 pieces per value); more of each value is then forced.

On the tiny model (``bench/multirate_bench.py``) a full perceive + plan + act step makes ~155 forward passes
for ~173 tokens, a drawn act on a new frame (:meth:`MolmoActEngine.act_on_observation`) ~14 for ~28, and the
prefill of either costs ~22 ms (~35 ms without the crop dedupe), so multi-rate actions come ~6-8x as often
as full steps (~4.7x with any split of the action values, 3.5-4.3x also with one pass per token and both
crops encoded).

Steering (acting on an edited trace), two ways (:class:`SteeringMode`):

* ``drawn`` (default, what the model was trained for): the trace is drawn on the first image as in
  training and the trajectory-conditioned prompt asks for the action; a fresh prefill, ~30 tokens per step.
* ``prefix``: the edited trace text replaces the model's trace in the answer; the cache is cropped back to
  the end of the depth block and only the edited text is prefilled, then the actions are decoded.

ROS-free. One inference runs at a time (an internal lock that serves waiting stages acting first, then
planning, then perceiving: :mod:`.scheduling`); results are frozen dataclasses with timings.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..model.processing import MolmoActProcessor, PromptVariant, build_prompt, chat_text
from .action_space import ActionChunkValues, NormStats, NormStatsTable, RotationConvention
from .constraints import ActionConstraint, AnswerConstraint, ConstraintVocab, DepthConstraint, TraceConstraint
from .grammar import (MULTI_VIEW_TEMPLATE, SINGLE_VIEW_TEMPLATE, TEMPLATES, TRAJECTORY_CONDITIONED_TEMPLATE,
                      ActionTokens, DepthTokens, ParseError, Trace, format_trace, parse_actions, parse_depth,
                      parse_trace)
from .scheduling import ACT, PERCEIVE, PLAN, PriorityRLock
from .sessions import Session, SessionLimits, SessionStore
from .steering import draw_trace


_LAST_STAGES = frozenset({'actions', 'actions_forced', 'answer'})  # stages that end the answer


class SteeringMode(str, enum.Enum):
    NONE = 'none'      # the model's own trace, continued in one generation
    PREFIX = 'prefix'  # edited trace text forced into the answer, actions continued from the cache
    DRAWN = 'drawn'    # edited trace drawn on the image + trajectory-conditioned prompt


class StageFailure(RuntimeError):
    """A stage's output could not be read (only possible with constraints off) or a request cannot run
    the stage (e.g. plan before perceive). The message says which and why; the engine stays usable."""


@dataclass(frozen=True)
class Observation:
    """What the model sees: the primary (first) view and an optional wrist view, RGB uint8 (H, W, 3).

    Depth and trace refer to ``image``. Both arrays are exactly the pixels fed to the model's processor.
    """

    image: np.ndarray
    wrist_image: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        for name in ('image', 'wrist_image'):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 3 \
                    or value.shape[2] != 3:
                raise ValueError(f'{name} must be an RGB uint8 array (H, W, 3), got '
                                 f'{getattr(value, "dtype", type(value))} {getattr(value, "shape", "")}')
            if value.shape[0] < 2 or value.shape[1] < 2:
                raise ValueError(f'{name} is too small: {value.shape[1]}x{value.shape[0]} pixels')

    def views(self) -> List[np.ndarray]:
        return [self.image] if self.wrist_image is None else [self.image, self.wrist_image]


@dataclass(frozen=True)
class StageTiming:
    """Seconds (monotonic clock) spent by one stage; token counts; whether the KV cache was reused."""

    stage: str
    prefill_s: float = 0.0
    decode_s: float = 0.0
    total_s: float = 0.0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    cache_reused: bool = False
    decode_passes: int = 0  # model forward passes of the decode (fewer than tokens with fast-forwarding)


@dataclass(frozen=True)
class PerceptionResult:
    request_id: str
    instruction: str
    depth: DepthTokens
    answer_text: str  # the answer so far (up to and including the depth block)
    timing: StageTiming


@dataclass(frozen=True)
class TraceResult:
    request_id: str
    trace: Trace                # the primary trace: 1..5 (x, y) points in 0..255 of the first image
    traces: Tuple[Trace, ...]   # every trace the model wrote (fine-tunes write two)
    answer_text: str            # the answer so far (up to and including the trace)
    timing: StageTiming


@dataclass(frozen=True)
class ActionResult:
    request_id: str
    tokens: ActionTokens
    actions: ActionChunkValues
    unnorm_key: str
    steering: SteeringMode
    trace_points: Tuple[Tuple[int, int], ...]  # the trace that conditioned the actions (model or edited)
    answer_text: str
    timing: StageTiming
    repairs: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class EngineConfig:
    """How the engine runs the model.

    ``horizon`` is the number of action steps per answer (1 for MolmoAct-7B-D-0812 as released, 8 for the
    LIBERO checkpoints and fine-tunes); ``action_dim`` the values per step. ``max_free_tokens`` bounds the
    free text (the sentences) the constraints allow before each structured part. ``fast_forward`` feeds the
    tokens the grammar forces after a chosen token in the same forward pass (no effect unconstrained);
    ``dedupe_crops`` runs identical image crops through the ViT once. Neither changes the tokens.
    ``canonical_actions`` admits, inside the action list, only the tokenization the model's tokenizer gives
    the released text form ``[a, b, ...]`` (what a trained model emits; values and parsing unchanged, no extra
    spaces around brackets), instead of any split of the same bytes: fewer tokens per value, more forced runs.
    """

    prompt_variant: PromptVariant = PromptVariant.MULTI_VIEW
    action_dim: int = 7
    horizon: int = 1
    unnorm_key: Optional[str] = None
    steering_mode: SteeringMode = SteeringMode.DRAWN
    constrained: bool = True
    max_free_tokens: int = 64
    multi_image: Optional[bool] = None
    rotation_convention: RotationConvention = RotationConvention.EULER_SXYZ_ROLL_PITCH_YAW
    limits: SessionLimits = field(default_factory=SessionLimits)
    fast_forward: bool = True
    dedupe_crops: bool = True
    canonical_actions: bool = True
    #: The answer wording the checkpoint was trained on (a ``grammar.TEMPLATES`` name); '' = the prompt
    #: variant's (released checkpoints). ``finetune`` (MolmoAct's fine-tune recipe, e.g. models trained by
    #: train_molmoact) writes the trace twice (left / right end effector): the trace stage then decodes two.
    answer_template: str = ''

    def __post_init__(self) -> None:
        object.__setattr__(self, 'prompt_variant', PromptVariant(self.prompt_variant))
        object.__setattr__(self, 'steering_mode', SteeringMode(self.steering_mode))
        if self.prompt_variant not in (PromptVariant.MULTI_VIEW, PromptVariant.SINGLE_VIEW):
            raise ValueError('prompt_variant must be a reasoning variant (multi_view or single_view); the '
                             'trajectory-conditioned prompts are used by steering')
        if not 1 <= self.horizon <= 64 or not 1 <= self.action_dim <= 64 or not 1 <= self.max_free_tokens <= 512:
            raise ValueError(f'invalid engine config {self}')
        if self.answer_template and (self.answer_template not in TEMPLATES or
                                     not TEMPLATES[self.answer_template].trace_sentences):
            raise ValueError(f'answer_template must be one of the reasoning templates '
                             f'{sorted(n for n, t in TEMPLATES.items() if t.trace_sentences)}, got '
                             f'{self.answer_template!r}')

    @property
    def template(self):
        if self.answer_template:
            return TEMPLATES[self.answer_template]
        return MULTI_VIEW_TEMPLATE if self.prompt_variant == PromptVariant.MULTI_VIEW else SINGLE_VIEW_TEMPLATE

    @property
    def steering_prompt(self) -> PromptVariant:
        return (PromptVariant.TRAJECTORY_MULTI_VIEW if self.prompt_variant == PromptVariant.MULTI_VIEW
                else PromptVariant.TRAJECTORY_SINGLE_VIEW)


class MolmoActEngine:
    """Staged, cached, constrained MolmoAct inference over one loaded model."""

    def __init__(self, model, processor: MolmoActProcessor, config: EngineConfig = EngineConfig(), *,
                 norm_stats: Optional[NormStatsTable] = None, model_id: str = ''):
        self.model = model.eval()
        self.processor = processor
        self.config = config
        self.model_id = model_id or str(getattr(model.config, '_name_or_path', '') or '')
        self.tokenizer = processor.tokenizer
        self.eos_id = processor.token_ids.eos
        self.vocab = ConstraintVocab.from_tokenizer(self.tokenizer)
        table = norm_stats or NormStatsTable.from_checkpoint_config(model.config)
        self.norm_stats: NormStats = table.select(config.unnorm_key)
        self.unnorm_key = self.norm_stats.key or (config.unnorm_key or '')
        if self.norm_stats.dim != config.action_dim:
            raise ValueError(f'norm stats {self.unnorm_key!r} are {self.norm_stats.dim}-D but action_dim is '
                             f'{config.action_dim}')
        self.sessions = SessionStore(config.limits)
        self._lock = PriorityRLock()  # acting before planning before perceiving: see reasoning/scheduling.py
        self._device = next(model.parameters()).device
        self._constraints = {
            'depth': DepthConstraint(self.vocab, max_free_tokens=config.max_free_tokens),
            'trace': TraceConstraint(self.vocab, max_free_tokens=config.max_free_tokens,
                                     num_traces=len(config.template.trace_sentences)),
            'actions': ActionConstraint(self.vocab, action_dim=config.action_dim, horizon=config.horizon,
                                        max_free_tokens=config.max_free_tokens,
                                        canonical=config.canonical_actions),
            # After a forced lead-in ("... the action that the robot should take is") the list opens at once.
            'actions_forced': ActionConstraint(self.vocab, action_dim=config.action_dim, horizon=config.horizon,
                                               max_free_tokens=0, canonical=config.canonical_actions),
        }
        if config.constrained:
            for c in self._constraints.values():
                c.warm_up()

    # -- public stages ----------------------------------------------------------------------------
    def perceive(self, observation: Observation, instruction: str,
                 request_id: Optional[str] = None) -> PerceptionResult:
        """Prefill the observation and instruction; decode the depth tokens. Starts a live request."""
        with self._lock:
            start = time.monotonic()
            request_id = request_id or uuid.uuid4().hex[:12]
            session, prefill_s = self._start_session(request_id, observation, instruction,
                                                     self.config.prompt_variant, observation.image)
            new, decode_s = self._decode(session, 'depth')
            session.marks['depth'] = len(session.answer_ids)
            text = self._answer_text(session)
            depth = parse_depth(text)
            if isinstance(depth, ParseError):
                self.sessions.release(request_id)
                raise StageFailure(f'perception of request {request_id}: {depth}')
            self.sessions.touch(request_id)
            return PerceptionResult(request_id, session.instruction, depth, text, StageTiming(
                'perception', prefill_s, decode_s, time.monotonic() - start, len(session.prompt_ids), len(new),
                decode_passes=session.data['decode_passes']))

    def plan(self, request_id: str) -> TraceResult:
        """Continue the request's answer through the trace (from the cache left by :meth:`perceive`)."""
        with self._lock.hold(PLAN):
            start = time.monotonic()
            session = self.sessions.get(request_id)
            if 'depth' not in session.marks:
                raise StageFailure(f'request {request_id}: plan needs the perception stage first')
            self._rewind(session, session.marks['depth'])
            resumed = session.data.pop('resumed', None)
            new, decode_s = self._decode(session, 'trace')
            session.marks['trace'] = len(session.answer_ids)
            text = self._answer_text(session)
            traces = parse_trace(text)
            if isinstance(traces, ParseError):
                raise StageFailure(f'planning of request {request_id}: {traces}')
            self.sessions.touch(request_id)
            prefill_s, prefill_tokens = resumed or (0.0, 0)
            return TraceResult(request_id, traces[0], traces, text, StageTiming(
                'planning', prefill_s, decode_s, time.monotonic() - start, prefill_tokens, len(new),
                cache_reused=resumed is None, decode_passes=session.data['decode_passes']))

    def act(self, request_id: str, trace_points: Optional[Sequence[Sequence[int]]] = None,
            steering: Optional[SteeringMode] = None, release: bool = True) -> ActionResult:
        """Decode the actions of a request: after the model's own trace, or on an edited ``trace_points``
        (1..5 (x, y) in 0..255) with ``steering`` (default: the config's mode). ``release`` frees the
        request's cache afterwards (keep it to act again on another edit)."""
        with self._lock.hold(ACT):
            start = time.monotonic()
            session = self.sessions.get(request_id)
            resumed = session.data.pop('resumed', None)
            if trace_points is None:
                if 'trace' not in session.marks:
                    raise StageFailure(f'request {request_id}: act needs the planning stage first '
                                       '(or an edited trace)')
                mode = SteeringMode.NONE
                self._rewind(session, session.marks['trace'])
                prefill_s, prefill_tokens = 0.0, 0
                points = parse_trace(self._answer_text(session))[0].points
                target = session
            else:
                points = check_trace_points(trace_points)
                mode = SteeringMode(steering or self.config.steering_mode)
                if mode == SteeringMode.NONE:
                    raise ValueError('an edited trace needs steering mode prefix or drawn')
                if mode == SteeringMode.PREFIX:
                    if 'depth' not in session.marks:
                        raise StageFailure(f'request {request_id}: prefix steering needs the perception stage')
                    target = session
                    prefill_s, prefill_tokens = self._force_trace(session, points)
                else:
                    target, prefill_s = self._drawn_session(session, points)
                    prefill_tokens = target.length
            new, decode_s = self._decode(target, 'actions' if mode == SteeringMode.NONE else 'actions_forced')
            text = self._answer_text(target)
            stage_text = self._decode_text(new)
            tokens = parse_actions(stage_text, self.config.action_dim, self.tokenizer,
                                   horizon=self.config.horizon)
            if isinstance(tokens, ParseError):
                raise StageFailure(f'action stage of request {request_id}: {tokens}')
            actions = ActionChunkValues.from_token_ids(tokens.token_ids, self.norm_stats,
                                                       rotation_convention=self.config.rotation_convention)
            if target is not session:
                self.sessions.release(target.request_id)
            if release:
                self.sessions.release(request_id)
            return ActionResult(request_id, tokens, actions, self.unnorm_key, mode, tuple(points), text,
                                StageTiming('action', prefill_s + (resumed[0] if resumed else 0.0), decode_s,
                                            time.monotonic() - start,
                                            prefill_tokens + (resumed[1] if resumed else 0), len(new),
                                            cache_reused=mode != SteeringMode.DRAWN and resumed is None,
                                            decode_passes=target.data['decode_passes']),
                                tokens.repairs)

    def act_on_observation(self, observation: Observation, instruction: str,
                           trace_points: Sequence[Sequence[int]], request_id: Optional[str] = None) -> ActionResult:
        """Actions on a *new* observation with a given trace, in the trained trajectory-conditioned (drawn)
        mode: the trace (1..5 (x, y) in 0..255, model space) is drawn on ``observation``'s image and only
        the action list is decoded. No perception or planning runs and nothing stays cached (multi-rate
        execution: act on each new frame with the newest, slower trace)."""
        with self._lock.hold(ACT):
            start = time.monotonic()
            points = check_trace_points(trace_points)
            request_id = request_id or uuid.uuid4().hex[:12]
            target, prefill_s = self._drawn_on(observation, ' '.join(str(instruction).split()), points,
                                               f'{request_id}#steer')
            prefill_tokens = target.length
            try:
                new, decode_s = self._decode(target, 'actions_forced')
                text = self._answer_text(target)
                tokens = parse_actions(self._decode_text(new), self.config.action_dim, self.tokenizer,
                                       horizon=self.config.horizon)
            finally:
                self.sessions.release(target.request_id)
            if isinstance(tokens, ParseError):
                raise StageFailure(f'action stage of request {request_id}: {tokens}')
            actions = ActionChunkValues.from_token_ids(tokens.token_ids, self.norm_stats,
                                                       rotation_convention=self.config.rotation_convention)
            return ActionResult(request_id, tokens, actions, self.unnorm_key, SteeringMode.DRAWN, tuple(points),
                                text, StageTiming('action', prefill_s, decode_s, time.monotonic() - start,
                                                  prefill_tokens, len(new), cache_reused=False,
                                                  decode_passes=target.data['decode_passes']), tokens.repairs)

    def run(self, observation: Observation, instruction: str) -> Tuple[PerceptionResult, TraceResult, ActionResult]:
        """All three stages of one request."""
        with self._lock:
            p = self.perceive(observation, instruction)
            t = self.plan(p.request_id)
            return p, t, self.act(p.request_id)

    def resume(self, observation: Observation, instruction: str, answer_text: str, stage: str,
               request_id: str) -> Session:
        """Rebuild a request in this process from a message's content (stateless handoff): prefill image +
        prompt + ``answer_text`` (the answer up to the end of ``stage``: 'depth' or 'trace')."""
        if stage not in ('depth', 'trace'):
            raise ValueError(f"stage must be 'depth' or 'trace', got {stage!r}")
        with self._lock.hold(PLAN):
            answer_ids = self.tokenizer.encode(answer_text, add_special_tokens=False)
            session, prefill_s = self._start_session(request_id, observation, instruction,
                                                     self.config.prompt_variant, observation.image,
                                                     answer_ids=answer_ids)
            # The next stage reports this prefill as its own (it did not reuse another stage's cache).
            session.data['resumed'] = (prefill_s, session.length)
            session.marks['depth'] = len(answer_ids) if stage == 'depth' else self._depth_mark(answer_ids)
            if stage == 'trace':
                session.marks['trace'] = len(answer_ids)
            return session

    def generate_answer(self, observation: Observation, instruction: str) -> List[int]:
        """The whole answer in one generation under the combined constraint (no stages): for equivalence
        checks and benchmarks. Returns the generated token ids."""
        with self._lock:
            rid = '__monolithic__' + uuid.uuid4().hex[:6]
            session, _ = self._start_session(rid, observation, instruction, self.config.prompt_variant,
                                             observation.image)
            try:
                new, _ = self._decode(session, 'answer')
                return new
            finally:
                self.sessions.release(rid)

    def turn(self, stage: str):
        """Hold the engine for a sequence of calls at ``stage``'s priority ('perceive', 'plan' or 'act'), e.g.
        "rebuild the request if it is not cached, then act" without another stage evicting it in between."""
        return self._lock.hold({'perceive': PERCEIVE, 'plan': PLAN, 'act': ACT}[stage])

    def release(self, request_id: str) -> bool:
        with self._lock:
            return self.sessions.release(request_id)

    # -- internals --------------------------------------------------------------------------------
    def _constraint(self, stage: str):
        if not self.config.constrained:
            return None
        if stage == 'answer':
            return AnswerConstraint(self.vocab, stages=(self._constraints['depth'], self._constraints['trace'],
                                                        self._constraints['actions']))
        return self._constraints[stage]

    def _start_session(self, request_id: str, observation: Observation, instruction: str,
                       variant: PromptVariant, first_image: np.ndarray, answer_ids: Sequence[int] = ()):
        prompt = chat_text(build_prompt(instruction, variant))
        views = [first_image] + ([observation.wrist_image] if observation.wrist_image is not None else [])
        inputs = self.processor(prompt, views, multi_image=self.config.multi_image)
        prompt_ids = inputs['input_ids'][0].tolist()
        ids = inputs['input_ids']
        if answer_ids:
            ids = torch.cat([ids, torch.tensor([list(answer_ids)], dtype=ids.dtype)], dim=1)
        images, pooled, masks = inputs['images'], inputs['pooled_patches_idx'], inputs['image_masks']
        start = time.monotonic()
        if self.config.dedupe_crops:
            images, pooled, masks = dedupe_crops(images, pooled, masks)
        with torch.no_grad():
            out = self.model(input_ids=ids.to(self._device), images=images.to(self._device),
                             pooled_patches_idx=pooled.to(self._device), image_masks=masks.to(self._device),
                             use_cache=True, logits_to_keep=1)
        prefill_s = time.monotonic() - start
        session = Session(request_id, ' '.join(str(instruction).split()), prompt_ids, cache=out.past_key_values,
                          answer_ids=list(answer_ids))
        session.data.update(observation=observation, next_logits=out.logits[:, -1].float(), variant=variant)
        self.sessions.add(session)
        return session, prefill_s

    def _decode(self, session: Session, stage: str) -> Tuple[List[int], float]:
        """Greedy decoding of one stage from the session's cache; the cache and the next-token logits are
        left at the end of the stage, ready for the next one."""
        constraint = self._constraint(stage)
        limit = (constraint.max_new_tokens() if constraint is not None else
                 {'depth': 200, 'trace': 120, 'actions': 40 * self.config.horizon + 60,
                  'actions_forced': 40 * self.config.horizon + 60, 'answer': 600}[stage])
        if constraint is not None:
            constraint.reset()
        logits = session.data['next_logits']
        new: List[int] = []
        # The constraint reads the sequence so far: one buffer, filled in place (no per-step copies).
        seen = session.prompt_ids + session.answer_ids
        buf = torch.empty((1, len(seen) + limit), dtype=torch.long)
        buf[0, :len(seen)] = torch.tensor(seen, dtype=torch.long)
        n = len(seen)
        fast_forward = constraint is not None and self.config.fast_forward
        last_stage = stage in _LAST_STAGES
        passes = 0
        start = time.monotonic()
        with torch.no_grad():
            while len(new) < limit:
                scores = logits  # masked in place: the raw logits are not needed afterwards
                if constraint is not None:
                    scores = constraint(buf[:, :n], scores.cpu() if scores.device.type != 'cpu' else scores)
                token = int(scores.argmax(-1))
                chunk = [token]
                if fast_forward and token != self.eos_id:
                    # Grammar fast-forwarding: the tokens the grammar forces after ``token`` (each the only
                    # one allowed, so greedy decoding would pick it) go into the same forward pass.
                    chunk += constraint.forced_run(new + chunk, max_len=limit - len(new) - 1)
                buf[0, n:n + len(chunk)] = torch.tensor(chunk, dtype=torch.long)
                n += len(chunk)
                new.extend(chunk)
                session.answer_ids.extend(chunk)
                done = self._stage_done(constraint, stage, new, chunk[-1]) or len(new) >= limit
                if done and last_stage:
                    # The answer ends here: no next-token logits are needed, so the last chunk is not fed
                    # (the cache lags the answer by it; _rewind re-syncs if a later stage continues).
                    logits = None
                    break
                out = self.model(input_ids=torch.tensor([chunk], device=self._device), cache=session.cache,
                                 use_cache=True, logits_to_keep=1)
                passes += 1
                logits = out.logits[:, -1].float()
                if done:
                    break
        session.data['next_logits'] = logits
        session.data['decode_passes'] = passes
        return new, time.monotonic() - start

    def _stage_done(self, constraint, stage: str, new: List[int], token: int) -> bool:
        if token == self.eos_id:
            return True
        if constraint is not None:
            return constraint.is_done(new)
        # Unconstrained: stop where the structure the stage writes has closed.
        if stage == 'depth':
            return token == self.vocab.depth_end_id
        text = self._decode_text(new)
        if stage == 'trace':
            return not isinstance(parse_trace(text), ParseError)
        if stage == 'actions':
            return not isinstance(parse_actions(text, self.config.action_dim, self.tokenizer,
                                                horizon=self.config.horizon), ParseError)
        return False

    def _rewind(self, session: Session, mark: int) -> None:
        """Drop answer tokens after ``mark`` (e.g. an earlier prefix-steering continuation)."""
        if len(session.answer_ids) > mark:
            del session.answer_ids[mark:]
        elif session.data.get('next_logits') is not None:
            return
        # The next-token logits at ``mark``: re-feed the last kept token (one step). The cache is cropped
        # from its own length (it lags the answer by the last chunk of a finished answer, never fed).
        last = session.answer_ids[-1] if session.answer_ids else session.prompt_ids[-1]
        session.cache.crop(-(session.cache.get_seq_length() - (session.length - 1)))
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([[last]], device=self._device), cache=session.cache,
                             use_cache=True, logits_to_keep=1)
        session.data['next_logits'] = out.logits[:, -1].float()

    def _force_trace(self, session: Session, points) -> Tuple[float, int]:
        """Prefix steering: keep the answer up to the depth block, append the edited trace sentence and the
        action sentence's lead-in, prefill only those tokens."""
        self._rewind(session, session.marks['depth'])
        session.marks.pop('trace', None)  # the model's trace is replaced from here on
        template = self.config.template
        trace_text = format_trace(points, spaced=template.trace_spaced)
        lead_in = template.action_sentence.split('{action}')[0].rstrip()
        forced = '. ' + ' '.join(t.format(trace=trace_text) for t in template.trace_sentences) + ' ' + lead_in
        ids = self.tokenizer.encode(forced, add_special_tokens=False)
        start = time.monotonic()
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids], device=self._device), cache=session.cache,
                             use_cache=True, logits_to_keep=1)
        session.answer_ids.extend(ids)
        session.data['next_logits'] = out.logits[:, -1].float()
        return time.monotonic() - start, len(ids)

    def _drawn_session(self, session: Session, points) -> Tuple[Session, float]:
        """Trajectory-conditioned request: the trace drawn on the first image, the steering prompt, and the
        trained answer's lead-in prefilled with it (only the action list is decoded)."""
        return self._drawn_on(session.data['observation'], session.instruction, points,
                              f'{session.request_id}#steer')

    def _drawn_on(self, observation: Observation, instruction: str, points, steer_id: str) -> Tuple[Session, float]:
        """A new session: the steering prompt, ``points`` drawn on ``observation``'s first image, and the
        trained answer's lead-in prefilled (the caller decodes the action list and releases it)."""
        drawn = draw_trace(observation.image, points)
        lead_in = ' ' + TRAJECTORY_CONDITIONED_TEMPLATE.action_sentence.split('{action}')[0].rstrip()
        return self._start_session(steer_id, observation, instruction, self.config.steering_prompt, drawn,
                                   answer_ids=self.tokenizer.encode(lead_in, add_special_tokens=False))

    def _depth_mark(self, answer_ids: Sequence[int]) -> int:
        try:
            return list(answer_ids).index(self.vocab.depth_end_id) + 1
        except ValueError:
            raise StageFailure('the answer text has no complete depth block') from None

    def _decode_text(self, ids: Sequence[int]) -> str:
        return self.processor.decode(list(ids))

    def _answer_text(self, session: Session) -> str:
        return self._decode_text(session.answer_ids)


def dedupe_crops(images: torch.Tensor, pooled_patches_idx: torch.Tensor,
                 image_masks: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Drop crops identical to an earlier crop of the same example, re-pointing the pooling indices that
    read them at the first copy, so the ViT runs once per distinct crop.

    The ViT encodes each crop on its own, so identical crops (pixels and masks) give identical features and
    every image token gets the features it would get from the full input. Frames up to 378 px (the
    pipeline's default ``max_image_side_px`` is 336) get a 1x1 tiling whose crop is, like the global view,
    the frame resized to 378x378: half of the ViT's work is a repeat. ``images`` (1, T, N, D),
    ``pooled_patches_idx`` (1, K, P) with -1 for padding, ``image_masks`` (1, T, N) or None; batches of
    more than one example are returned unchanged.
    """
    if images.dim() != 4 or images.shape[0] != 1 or images.shape[1] < 2:
        return images, pooled_patches_idx, image_masks
    n_crops, per_crop = images.shape[1], images.shape[2]
    keep: List[int] = []
    slot: List[int] = []  # new position of each old crop
    for i in range(n_crops):
        for j, k in enumerate(keep):
            if torch.equal(images[0, i], images[0, k]) and (
                    image_masks is None or torch.equal(image_masks[0, i], image_masks[0, k])):
                slot.append(j)
                break
        else:
            slot.append(len(keep))
            keep.append(i)
    if len(keep) == n_crops:
        return images, pooled_patches_idx, image_masks
    base = torch.tensor(slot, dtype=pooled_patches_idx.dtype) * per_crop
    idx = pooled_patches_idx.clamp(min=0)
    remapped = torch.where(pooled_patches_idx >= 0, base[idx // per_crop] + idx % per_crop, pooled_patches_idx)
    return (images[:, keep], remapped, image_masks[:, keep] if image_masks is not None else None)


def check_trace_points(points: Sequence[Sequence[int]]) -> Tuple[Tuple[int, int], ...]:
    """Validate an edited trace: 1..5 points of two integers in 0..255 (ValueError otherwise)."""
    try:
        pts = tuple((int(p[0]), int(p[1])) for p in points)
        if any(len(p) != 2 for p in points) or any(float(v) != int(v) for p in points for v in p):
            raise ValueError
    except (TypeError, ValueError, IndexError):
        raise ValueError(f'a trace is a list of (x, y) integer pairs, got {points!r}') from None
    if not 1 <= len(pts) <= 5:
        raise ValueError(f'a trace has 1 to 5 points, got {len(pts)}')
    if any(not (0 <= v <= 255) for p in pts for v in p):
        raise ValueError(f'trace coordinates must be in 0..255, got {pts}')
    return pts
