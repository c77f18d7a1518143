"""MolmoAct prompts and processor: text + images -> the model's inputs, as the released processor does it.

* Prompts: the quoted prompt variants of AllenAI's released code (docs/molmoact-reference-facts.md §6,
  shared notes molmoact-internals §2.2): multi-view and single-view action reasoning, and the
  trajectory-conditioned (steering) prompts.
* Chat framing: ``User: {prompt} Assistant:`` (the released "demo_role" template, no system prompt).
* Layout of one example: BOS (``<|endoftext|>``, Qwen has no BOS), the image tokens of every image (with
  ``Image k`` text before each image in multi-image mode), then the chat text; batches are left-padded
  with ``<|endoftext|>``.

ROS-free. :class:`MolmoActProcessor` loads from and saves to a checkpoint directory (tokenizer files +
``preprocessor_config.json`` + ``processor_config.json``) and is registered with ``AutoProcessor``.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .image_processing import ImageInputs, ImageLike, ImageTokenIds, MolmoActImageProcessor, collate
from .tokenizer import molmoact_token_ids

PROCESSOR_CONFIG_NAME = 'processor_config.json'
IMAGE_PROCESSOR_CONFIG_NAME = 'preprocessor_config.json'


class PromptVariant(str, enum.Enum):
    """Which released prompt to use (the checkpoints were trained with different wordings)."""

    MULTI_VIEW = 'multi_view'        # MolmoAct-7B-D-0812, LIBERO checkpoints, fine-tunes
    SINGLE_VIEW = 'single_view'      # the -Pretrain checkpoints (SimplerEnv)
    TRAJECTORY_MULTI_VIEW = 'trajectory_multi_view'    # steering: trace drawn on the first image
    TRAJECTORY_SINGLE_VIEW = 'trajectory_single_view'  # steering, single view (Steer-SimplerEnv)


_PROMPTS = {
    PromptVariant.MULTI_VIEW: (
        'The task is {task}. What is the action that the robot should take. To figure out the action that the '
        'robot should take to {task}, let\'s think through it step by step. First, what is the depth map for the '
        'first image? Second, what is the trajectory of the end effector in the first image? Based on the depth '
        'map of the first image and the trajectory of the end effector in the first image, along with other '
        'images from different camera views as additional information, what is the action that the robot should '
        'take?'),
    PromptVariant.SINGLE_VIEW: (
        'The task is {task}. What is the action that the robot should take. To figure out the action that the '
        'robot should take to {task}, let\'s think through it step by step. First, what is the depth map for this '
        'image? Second, what is the trajectory of the end effector? Based on the depth map of the image and the '
        'trajectory of the end effector, what is the action that the robot should take?'),
    PromptVariant.TRAJECTORY_MULTI_VIEW: (
        'The task is {task}. Notice that the trajectory of the end effector is annotated on the first image. '
        'Based on the trajectory annotated on the image, along with other images from different camera views as '
        'additional information, what is the action that the robot should take?'),
    PromptVariant.TRAJECTORY_SINGLE_VIEW: (
        'The task is {task}. Notice that the trajectory of the end effector is annotated on the image. Based on '
        'the trajectory annotated on the image, what is the action that the robot should take?'),
}

MAX_INSTRUCTION_CHARS = 1000


def build_prompt(instruction: str, variant: Union[PromptVariant, str] = PromptVariant.MULTI_VIEW) -> str:
    """The released prompt for ``instruction`` (stripped; a trailing period is dropped since the prompt
    adds its own). Raises ValueError for an empty or over-long instruction."""
    task = ' '.join(str(instruction).split())
    if task.endswith('.'):
        task = task[:-1].rstrip()
    if not task:
        raise ValueError('instruction is empty')
    if len(task) > MAX_INSTRUCTION_CHARS:
        raise ValueError(f'instruction has {len(task)} characters; at most {MAX_INSTRUCTION_CHARS}')
    return _PROMPTS[PromptVariant(variant)].format(task=task)


def chat_text(prompt: str) -> str:
    """One user turn in the released chat framing, ready for generation."""
    return f'User: {prompt} Assistant:'


@dataclass(frozen=True)
class ProcessorSettings:
    """Processor attributes stored in ``processor_config.json`` (released values by default)."""

    use_col_tokens: bool = True
    multi_image: Optional[bool] = None  # None: a list of views is multi-image, a single image is not
    max_length: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'ProcessorSettings':
        return cls(use_col_tokens=bool(data.get('use_col_tokens', True)), multi_image=data.get('multi_image'),
                   max_length=data.get('max_length'))


class MolmoActProcessor:
    """Turns instructions and camera images into ``input_ids``, ``attention_mask``, ``images``,
    ``image_masks`` and ``pooled_patches_idx`` for :class:`MolmoActForActionReasoning`."""

    def __init__(self, tokenizer, image_processor: Optional[MolmoActImageProcessor] = None,
                 settings: ProcessorSettings = ProcessorSettings()):
        self.tokenizer = tokenizer
        self.image_processor = image_processor or MolmoActImageProcessor()
        self.settings = settings
        self.token_ids = molmoact_token_ids(tokenizer)
        self.image_token_ids = ImageTokenIds(start=self.token_ids.im_start, end=self.token_ids.im_end,
                                             patch=self.token_ids.image_patch, col=self.token_ids.im_col)

    # -- persistence ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], **kwargs) -> 'MolmoActProcessor':
        """Load from a checkpoint directory or hub id (the Hugging Face cache; offline mode respected)."""
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
        from transformers.utils import cached_file

        hub_kwargs = {k: kwargs[k] for k in ('cache_dir', 'local_files_only', 'revision', 'token') if k in kwargs}
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), **hub_kwargs)
        except (ValueError, OSError, KeyError):
            # A tokenizer_config naming a remote-code class (the converter's --override_tokenizer): the
            # tokenizer.json itself is standard, and this processor inserts BOS on its own.
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), **hub_kwargs)
        image_file = cached_file(str(path), IMAGE_PROCESSOR_CONFIG_NAME, _raise_exceptions_for_missing_entries=False,
                                 **hub_kwargs)
        image_processor = MolmoActImageProcessor.from_pretrained(image_file) if image_file else None
        proc_file = cached_file(str(path), PROCESSOR_CONFIG_NAME, _raise_exceptions_for_missing_entries=False,
                                **hub_kwargs)
        settings = ProcessorSettings.from_dict(json.loads(Path(proc_file).read_text())) if proc_file else ProcessorSettings()
        return cls(tokenizer, image_processor, settings)

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        data = {'processor_class': 'MolmoActProcessor', 'use_col_tokens': self.settings.use_col_tokens,
                'multi_image': self.settings.multi_image, 'max_length': self.settings.max_length}
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(data, indent=2) + '\n')
        return directory

    # -- encoding -------------------------------------------------------------------------------
    def encode_text(self, text: str) -> List[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, text: str, image_inputs: Optional[ImageInputs]) -> List[int]:
        """BOS + image tokens (with ``Image k`` labels) + the tokens of ``text`` for one example."""
        ids = [self.token_ids.bos]
        if image_inputs is not None:
            for segment in image_inputs.prompt_segments(self.image_token_ids, self.settings.use_col_tokens):
                ids.extend(self.encode_text(segment) if isinstance(segment, str) else segment.tolist())
        ids.extend(self.encode_text(text))
        return ids

    def preprocess_images(self, images: Union[ImageLike, Sequence[ImageLike]],
                          multi_image: Optional[bool] = None) -> ImageInputs:
        if multi_image is None:
            multi_image = self.settings.multi_image
        return self.image_processor.preprocess(images, multi_image=multi_image)

    def __call__(self, text: Union[str, Sequence[str]],
                 images: Optional[Union[ImageLike, Sequence[Any]]] = None, *,
                 apply_chat_template: bool = False, multi_image: Optional[bool] = None,
                 return_tensors: str = 'pt') -> Dict[str, Any]:
        """Encode one example (``text`` a string, ``images`` an image or a list of views) or a batch
        (``text`` a list, ``images`` a list with one entry per example). ``apply_chat_template`` wraps each
        text as ``User: ... Assistant:``. Returns torch tensors (``return_tensors='pt'``) or numpy arrays."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if images is None:
            per_example: List[Any] = [None] * len(texts)
        elif single:
            per_example = [images]
        else:
            per_example = list(images)
            if len(per_example) != len(texts):
                raise ValueError(f'{len(texts)} texts but {len(per_example)} image entries')
        rows, image_inputs = [], []
        for t, imgs in zip(texts, per_example):
            t = chat_text(t) if apply_chat_template else t
            inputs = self.preprocess_images(imgs, multi_image) if imgs is not None else None
            rows.append(self.prompt_ids(t, inputs))
            if inputs is not None:
                image_inputs.append(inputs)
        if image_inputs and len(image_inputs) != len(rows):
            raise ValueError('either every example of a batch has images or none has')
        width = max(len(r) for r in rows)
        if self.settings.max_length is not None and width > self.settings.max_length:
            raise ValueError(f'prompt of {width} tokens exceeds max_length {self.settings.max_length}')
        input_ids = np.full((len(rows), width), self.token_ids.pad, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):  # left padding
            input_ids[i, width - len(row):] = row
            attention_mask[i, width - len(row):] = 1
        out: Dict[str, Any] = {'input_ids': input_ids, 'attention_mask': attention_mask}
        if image_inputs:
            arrays = collate(image_inputs)
            out.update(images=arrays['images'], image_masks=arrays['image_masks'],
                       pooled_patches_idx=arrays['pooled_patches_idx'])
        if return_tensors == 'pt':
            out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
        elif return_tensors != 'np':
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Decode generated ids as the released code does (special tokens dropped, depth tokens kept,
        no clean-up of spaces)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens,
                                     clean_up_tokenization_spaces=False)
