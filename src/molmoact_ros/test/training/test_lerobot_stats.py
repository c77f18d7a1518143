"""The LeRobot writer's image statistics from per-channel value counts equal the statistics of every pixel."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from molmoact_ros.training.lerobot_format import _channel_histogram, _image_stats, feature_stats


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), count=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9),
       levels=st.integers(1, 256))
def test_image_stats_from_counts_equal_the_stats_of_every_pixel(seed, count, h, w, levels):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, levels, (h, w, 3), dtype=np.uint8) for _ in range(count)]
    expected = feature_stats(np.stack([im.astype(np.float32) / 255.0 for im in images]).reshape(-1, 3))
    got = _image_stats(np.sum([_channel_histogram(im) for im in images], axis=0))
    assert got['count'] == expected['count']
    for name in ('min', 'max', 'mean', 'std', 'q01', 'q99'):
        np.testing.assert_allclose(np.asarray(got[name]).reshape(3), expected[name], rtol=0, atol=1e-12,
                                   err_msg=name)
