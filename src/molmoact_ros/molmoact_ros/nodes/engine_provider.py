"""One MolmoAct engine per process, shared by the stage nodes hosted there (one copy of the weights).

The first node to configure loads the model with its parameters; later nodes attach to the same engine
(their model parameters must agree, else configure fails with a clear message); the engine is released
when the last node cleans up. ``model: tiny`` builds the tiny random-weight structural model into a
cache folder (offline, seconds) so that the pipeline runs anywhere.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from ..reasoning.sessions import RETAINED_REQUESTS
from ..ros.params import ParamSpec

TINY = 'tiny'
#: The small MolmoAct-architecture model trained here on the simulated arm's lift demonstrations (not
#: MolmoAct-7B): its compact weights ship in the package (model/weights/sim_lift) and are assembled into a
#: released-layout checkpoint on first use. README "The trained model".
SIM_LIFT = 'sim-lift'
#: Models built or assembled by the package itself (float32 on the CPU: bf16 would only be slower there).
BUNDLED = (TINY, SIM_LIFT)

ENGINE_PARAMETERS = (
    ParamSpec('model', TINY, 'MolmoAct checkpoint: a local directory, a Hugging Face hub id (through the HF cache; '
              'HF_HUB_OFFLINE respected), or "tiny" for the random-weight structural test model.', read_only=True),
    ParamSpec('dtype', 'bfloat16', 'Weights dtype.', choices=('bfloat16', 'float16', 'float32'), read_only=True),
    ParamSpec('device', 'auto', 'Torch device: auto (CUDA if available), cpu, cuda, cuda:N.', read_only=True),
    ParamSpec('quantization', 'none', 'bitsandbytes quantization of the LLM.', choices=('none', '8bit', '4bit'),
              read_only=True),
    ParamSpec('prompt_variant', 'multi_view', 'Released prompt wording (multi_view: MolmoAct-7B-D-0812, LIBERO, '
              'fine-tunes; single_view: the -Pretrain checkpoints).', choices=('multi_view', 'single_view'),
              read_only=True),
    ParamSpec('unnorm_key', '', 'Norm-stats key for unnormalizing actions (empty: the only key of the checkpoint).',
              read_only=True),
    ParamSpec('action_horizon', 0, 'Action steps per answer; 0: the checkpoint\'s own (config.json '
              '"action_horizon", which train_molmoact writes; 1 when absent, as for MolmoAct-7B-D-0812; the LIBERO '
              'checkpoints answer 8).', min_value=0, max_value=64, read_only=True),
    ParamSpec('max_free_tokens', 64, 'Free-text tokens allowed before each structured part of the answer.',
              min_value=1, max_value=512, read_only=True),
    ParamSpec('steering_mode', 'drawn', 'How edited traces condition the actions: drawn (trained mode) or prefix.',
              choices=('drawn', 'prefix'), read_only=True),
    ParamSpec('retained_requests', RETAINED_REQUESTS, 'How many of the newest requests keep their KV cache '
              'after their chunk, so a trace edit acts at once; an edit to an older request first rebuilds it from its PerceptionTokens '
              '(one prefill). Each retained request holds one KV cache in memory (tens of MB for the 7B in bf16).',
              min_value=1, max_value=64, read_only=True),
)
ENGINE_KEYS = tuple(p.name for p in ENGINE_PARAMETERS)


def tiny_cache_dir() -> Path:
    return Path(os.environ.get('MOLMOACT_TINY_DIR', Path.home() / '.cache' / 'molmoact_ros' / 'tiny-structural'))


def bundled_weights_dir(name: str = SIM_LIFT) -> Path:
    """The compact weights of a model that ships in the package (``sim-lift``: model/weights/sim_lift)."""
    return Path(__file__).resolve().parents[1] / 'model' / 'weights' / name.replace('-', '_')


def _assembled_dir(name: str) -> Path:
    """Where a bundled model is assembled: keyed by its compact weights' content (a new version, a new folder)."""
    import hashlib
    compact = bundled_weights_dir(name)
    digest = hashlib.sha256()
    for f in sorted(compact.iterdir()):
        if f.is_file():
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    root = Path(os.environ.get('MOLMOACT_MODEL_CACHE', Path.home() / '.cache' / 'molmoact_ros'))
    return root / f'{name}-{digest.hexdigest()[:12]}'


def resolve_model(model: str) -> str:
    """The checkpoint to load: builds the tiny structural model on first use of ``tiny``; assembles the
    bundled ``sim-lift`` model from its compact weights on first use (seconds, offline)."""
    if model == TINY:
        from ..model.tiny import is_tiny_checkpoint, save_tiny_checkpoint
        path = tiny_cache_dir()
        if not is_tiny_checkpoint(path):
            save_tiny_checkpoint(path)
        return str(path)
    if model == SIM_LIFT:
        from ..training.compact import assemble_checkpoint
        if not (bundled_weights_dir(model) / 'compact.json').is_file():
            raise FileNotFoundError(f'the bundled model {model!r} has no weights at {bundled_weights_dir(model)}')
        path = _assembled_dir(model)
        if not (path / 'model.safetensors').is_file():
            assemble_checkpoint(bundled_weights_dir(model), path)
        return str(path)
    return model


def model_action_horizon(model: str) -> int:
    """The action steps per answer of ``model`` with ``action_horizon: 0``: its config.json's
    ``action_horizon`` (a local or bundled checkpoint), else 1."""
    import json
    try:
        config = json.loads((Path(resolve_model(model)) / 'config.json').read_text())
    except (OSError, ValueError):
        return 1
    own = config.get('action_horizon')
    return int(own) if isinstance(own, int) and 1 <= own <= 64 else 1


def checkpoint_horizon(config, requested: int) -> int:
    """The action steps per answer: ``requested`` unless 0, else the checkpoint's ``action_horizon`` (written
    by train_molmoact from its dataset), else 1 (the released MolmoAct-7B-D-0812 answers one step)."""
    if requested > 0:
        return int(requested)
    own = getattr(config, 'action_horizon', None)
    return int(own) if isinstance(own, int) and 1 <= own <= 64 else 1


def checkpoint_template(config) -> str:
    """The answer wording a checkpoint was trained on: its config's ``answer_template`` (train_molmoact writes
    it: ``finetune`` for the builder's datasets), else '' (the prompt variant's, as for released checkpoints)."""
    from ..reasoning.grammar import TEMPLATES
    name = getattr(config, 'answer_template', None)
    return name if isinstance(name, str) and name in TEMPLATES and TEMPLATES[name].trace_sentences else ''


@dataclass
class _Loaded:
    engine: object
    settings: Dict[str, object]
    users: int


class EngineProvider:
    """Loads, shares and releases the engine of this process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loaded: Optional[_Loaded] = None

    def acquire(self, settings: Dict[str, object]):
        """The shared engine for ``settings`` (the ENGINE_PARAMETERS values); loads it on first use.
        Raises RuntimeError / ModelLoadError / ValueError with a clear message on failure."""
        settings = {k: settings[k] for k in ENGINE_KEYS}
        with self._lock:
            if self._loaded is not None:
                if self._loaded.settings != settings:
                    diff = {k: (self._loaded.settings[k], settings[k]) for k in ENGINE_KEYS
                            if self._loaded.settings[k] != settings[k]}
                    raise RuntimeError(f'this process already runs an engine with other settings: {diff}')
                self._loaded.users += 1
                return self._loaded.engine
            engine = self._load(settings)
            self._loaded = _Loaded(engine, settings, 1)
            return engine

    def release(self) -> None:
        with self._lock:
            if self._loaded is None:
                return
            self._loaded.users -= 1
            if self._loaded.users <= 0:
                engine = self._loaded.engine
                self._loaded = None
                del engine
                try:
                    import torch
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                except ImportError:  # pragma: no cover
                    pass

    @staticmethod
    def _load(settings: Dict[str, object]):
        from ..model.loading import LoadOptions, load_model
        from ..model.processing import MolmoActProcessor
        from ..reasoning.engine import EngineConfig, MolmoActEngine
        from ..reasoning.sessions import SessionLimits

        path = resolve_model(str(settings['model']))
        dtype = str(settings['dtype'])
        if settings['model'] in BUNDLED:
            dtype = 'float32'  # small models; CPU bf16 would only be slower
        model = load_model(path, LoadOptions(dtype=dtype, device=str(settings['device']),
                                             quantization=str(settings['quantization']), sparse_head=True))
        processor = MolmoActProcessor.from_pretrained(path)
        config = EngineConfig(prompt_variant=str(settings['prompt_variant']),
                              unnorm_key=str(settings['unnorm_key']) or None,
                              horizon=checkpoint_horizon(model.config, int(settings['action_horizon'])),
                              answer_template=checkpoint_template(model.config),
                              max_free_tokens=int(settings['max_free_tokens']),
                              steering_mode=str(settings['steering_mode']),
                              limits=SessionLimits(max_sessions=int(settings['retained_requests'])))
        return MolmoActEngine(model, processor, config, model_id=str(settings['model']))


#: The provider of this process (nodes in one process share it).
PROCESS_PROVIDER = EngineProvider()
