"""Loading options for MolmoAct checkpoints: dtype, device / device_map, bitsandbytes 8/4-bit, attention.

ROS-free. A checkpoint is a local directory or a hub id resolved through the normal Hugging Face cache;
``HF_HUB_OFFLINE=1`` (or ``local_files_only=True``) is respected, and a missing checkpoint produces a
:class:`ModelLoadError` that says where it looked.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch

DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16, 'fp16': torch.float16,
          'float32': torch.float32, 'fp32': torch.float32}
QUANTIZATIONS = ('none', '8bit', '4bit')
ATTENTION = ('sdpa', 'eager')


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says why and what to change."""


@dataclass(frozen=True)
class LoadOptions:
    """How to load a checkpoint.

    ``device``: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:N'. ``device_map`` (e.g.
    'auto') overrides ``device`` and spreads layers over devices with accelerate. ``quantization``:
    'none', '8bit' (LLM.int8) or '4bit' (NF4, bf16 compute) through bitsandbytes.
    """

    dtype: str = 'bfloat16'
    device: str = 'auto'
    device_map: Optional[str] = None
    quantization: str = 'none'
    attn_implementation: str = 'sdpa'
    local_files_only: Optional[bool] = None
    #: Inference: when most output-matrix rows are exactly zero (a model trained here with the restricted
    #: loss, e.g. ``sim-lift``), compute logits only for the other rows (:class:`RowSparseHead`; the zero rows'
    #: logits are 0 as before). The 152k-row matrix is then not read per token (78 MB in fp32 for a 128-wide
    #: model: most of a CPU decode step). Off for training, which needs the dense layer.
    sparse_head: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f'dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}')
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f'quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}')
        if self.attn_implementation not in ATTENTION:
            raise ValueError(f'attn_implementation must be one of {ATTENTION}, got {self.attn_implementation!r}')

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def resolved_device(self) -> str:
        if self.device == 'auto':
            return 'cuda' if torch.cuda.is_available() else 'cpu'
        if self.device.startswith('cuda') and not torch.cuda.is_available():
            raise ModelLoadError(f'device {self.device!r} requested but CUDA is not available on this machine '
                                 '(use device "cpu" or "auto")')
        return self.device


def bitsandbytes_status(device: str) -> Optional[str]:
    """None when bitsandbytes can quantize on ``device``; otherwise a sentence saying why not."""
    if importlib.util.find_spec('bitsandbytes') is None:
        return 'bitsandbytes is not installed (pip install -r requirements.txt)'
    if importlib.util.find_spec('accelerate') is None:
        return 'accelerate is not installed; transformers needs it to load quantized models'
    kind = device.split(':')[0]
    if kind not in ('cuda', 'cpu', 'xpu'):
        return f'bitsandbytes does not support device {device!r}'
    try:
        import bitsandbytes  # noqa: F401  (imports its backends; fails where none fits)
    except Exception as exc:  # noqa: BLE001
        return f'bitsandbytes failed to import: {exc}'
    return None


def quantization_config(options: LoadOptions, device: str):
    """The transformers BitsAndBytesConfig for ``options`` (None when not quantizing)."""
    if options.quantization == 'none':
        return None
    problem = bitsandbytes_status(device)
    if problem:
        raise ModelLoadError(f'{options.quantization} quantization is not available: {problem}')
    from transformers import BitsAndBytesConfig

    # The vision backbone is small and precision-sensitive; the output head decides every token.
    skip = ['lm_head', 'model.vision_backbone']  # prefixes of module names
    if options.quantization == '8bit':
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4',
                              bnb_4bit_compute_dtype=options.torch_dtype if options.dtype != 'float32' else torch.float32,
                              bnb_4bit_use_double_quant=False, llm_int8_skip_modules=skip)


def load_model(checkpoint: Union[str, os.PathLike], options: LoadOptions = LoadOptions()):
    """Load a MolmoAct checkpoint natively (no remote code) and return the model in eval mode."""
    from . import register
    from .modeling import MolmoActForActionReasoning

    register()
    device = options.resolved_device()
    kwargs = dict(dtype=options.torch_dtype, attn_implementation=options.attn_implementation)
    if options.local_files_only is not None:
        kwargs['local_files_only'] = options.local_files_only
    qconfig = quantization_config(options, device)
    if qconfig is not None:
        kwargs['quantization_config'] = qconfig
        kwargs['device_map'] = options.device_map or device
    elif options.device_map is not None:
        kwargs['device_map'] = options.device_map
    try:
        model = MolmoActForActionReasoning.from_pretrained(str(checkpoint), **kwargs)
    except (OSError, ValueError) as exc:
        offline = os.environ.get('HF_HUB_OFFLINE') == '1' or options.local_files_only
        hint = (' (offline: only local directories and the Hugging Face cache are searched)' if offline else '')
        raise ModelLoadError(f'could not load MolmoAct checkpoint {str(checkpoint)!r}{hint}: {exc}') from exc
    if qconfig is None and options.device_map is None:
        model = model.to(device)
    if options.sparse_head and qconfig is None:
        RowSparseHead.install(model)
    return model.eval()


class RowSparseHead(torch.nn.Module):
    """An output layer whose rows outside ``ids`` are zero: ``logits[..., ids] = x @ rows.T``, 0 elsewhere
    (exactly what the dense bias-free layer gives for zero rows)."""

    #: Installed only when at least this fraction of the rows is zero (else the dense layer is as fast).
    MIN_ZERO_FRACTION = 0.5

    def __init__(self, ids: torch.Tensor, rows: torch.Tensor, vocab_size: int):
        super().__init__()
        self.register_buffer('ids', ids)
        self.register_buffer('rows', rows)
        self.vocab_size = int(vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((*x.shape[:-1], self.vocab_size))
        out[..., self.ids] = torch.nn.functional.linear(x, self.rows)
        return out

    @classmethod
    def install(cls, model) -> bool:
        """Replace ``model.lm_head`` when it is a bias-free linear layer with mostly zero rows; True if done."""
        head = getattr(model, 'lm_head', None)
        if not isinstance(head, torch.nn.Linear) or head.bias is not None:
            return False
        with torch.no_grad():
            nonzero = head.weight.ne(0).any(dim=1)
            if 1.0 - float(nonzero.float().mean()) < cls.MIN_ZERO_FRACTION:
                return False
            ids = nonzero.nonzero()[:, 0]
            model.lm_head = cls(ids, head.weight[ids].clone(), head.weight.shape[0])
        return True
