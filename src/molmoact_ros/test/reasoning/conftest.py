"""Shared fixtures of the reasoning tests."""

import pytest

from molmoact_ros.model.loading import LoadOptions, load_model
from molmoact_ros.model.processing import MolmoActProcessor
from molmoact_ros.model.tiny import save_tiny_checkpoint


@pytest.fixture(scope='session')
def parts(tmp_path_factory):
    """The tiny random-weight structural model (fp32, CPU) and its processor, built once per session."""
    path = save_tiny_checkpoint(tmp_path_factory.mktemp('tiny'))
    model = load_model(path, LoadOptions(dtype='float32', device='cpu'))
    return model, MolmoActProcessor.from_pretrained(path)
