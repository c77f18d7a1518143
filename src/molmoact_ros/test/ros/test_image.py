"""sensor_msgs/Image <-> NumPy without cv_bridge: round trips, padding, byte order, depth, bad inputs."""

import array
import importlib.util
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from molmoact_ros.ros import image as im
from molmoact_ros.ros.image import (ImageFormatError, UnsupportedEncodingError, depth_to_meters,
                                    encoding_info, image_to_numpy, numpy_to_image, supported_encodings,
                                    to_rgb8)

ALL = supported_encodings()
NAMED = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', '16UC1', '32FC1', '8UC3')


def _shape(info, h, w):
    return (h, w) if info.channels == 1 else (h, w, info.channels)


def _raw_msg(arr, encoding, *, pad=0, big=False):
    """A duck-typed Image holding ``arr`` with ``pad`` bytes of junk at the end of each row."""
    info = encoding_info(encoding)
    h, w = arr.shape[:2]
    dt = info.dtype.newbyteorder('>' if big else '<')
    rows = np.ascontiguousarray(arr, dtype=dt).reshape(h, -1).view(np.uint8)
    junk = np.full((h, pad), 0xAB, np.uint8)
    data = array.array('B', np.concatenate([rows, junk], axis=1).tobytes())
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=int(big),
                           step=w * info.bytes_per_pixel + pad, data=data)


@st.composite
def images(draw, encoding, max_side=9):
    info = encoding_info(encoding)
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    return draw(hnp.arrays(info.dtype, _shape(info, h, w)))


def _same(a, b):
    """Bit-identical (NaN payloads included)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_named_encodings_are_supported_and_yuv_bayer_are_not():
    for enc in NAMED:
        assert enc in ALL
    for enc in ('yuv422', 'yuv422_yuy2', 'UYVY', 'nv12', 'bayer_rggb8', 'bayer_bggr16', 'jpeg', ''):
        with pytest.raises(UnsupportedEncodingError, match='unsupported encoding'):
            encoding_info(enc)
    assert issubclass(UnsupportedEncodingError, ImageFormatError)
    assert issubclass(ImageFormatError, ValueError)
    assert encoding_info('16uc1') is encoding_info('16UC1')  # case-insensitive lookup


@pytest.mark.parametrize('encoding', ALL)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_round_trip_every_encoding(encoding, data):
    arr = data.draw(images(encoding))
    msg = numpy_to_image(arr, encoding)
    assert msg.encoding == encoding_info(encoding).name
    assert msg.is_bigendian == 0
    assert msg.step == arr.shape[1] * encoding_info(encoding).bytes_per_pixel
    assert isinstance(msg.data, array.array) and len(msg.data) == msg.step * msg.height
    back = image_to_numpy(msg)
    assert _same(back, arr)
    # padded rows and big-endian data read back to the same pixels
    pad = data.draw(st.integers(0, 7))
    big = data.draw(st.booleans())
    assert _same(image_to_numpy(_raw_msg(arr, encoding, pad=pad, big=big)), arr)


@pytest.mark.parametrize('encoding', NAMED)
def test_round_trip_through_serialization(encoding):
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    info = encoding_info(encoding)
    rng = np.random.default_rng(0)
    arr = (rng.random(_shape(info, 5, 7)) * 1000).astype(info.dtype)
    header = Header(frame_id='cam_optical')
    header.stamp.sec = 12
    msg = numpy_to_image(arr, encoding, header)
    back = deserialize_message(serialize_message(msg), Image)
    assert back.header.frame_id == 'cam_optical' and back.header.stamp.sec == 12
    assert _same(image_to_numpy(back), arr)


def test_view_not_copy_and_read_only():
    arr = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    msg = numpy_to_image(arr, 'rgb8')
    view = image_to_numpy(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0, 0, 0] = 1
    own = image_to_numpy(msg, copy=True)
    assert own.flags.writeable and own.flags.c_contiguous
    assert not np.shares_memory(own, np.frombuffer(msg.data, np.uint8))
    # an unpadded rgb8 image goes to the model as the same view: no copy
    assert np.shares_memory(to_rgb8(msg), np.frombuffer(msg.data, np.uint8))
    # padded rows are still a view
    padded = _raw_msg(arr, 'rgb8', pad=5)
    view = image_to_numpy(padded)
    assert np.shares_memory(view, np.frombuffer(padded.data, np.uint8))
    assert view.strides == (5 * 3 + 5, 3, 1)


def test_padded_step_skips_junk_and_accepts_trailing_bytes():
    arr = np.arange(3 * 4, dtype=np.uint16).reshape(3, 4) * 1000
    msg = _raw_msg(arr, 'mono16', pad=3)  # odd padding: unaligned uint16 rows
    np.testing.assert_array_equal(image_to_numpy(msg), arr)
    msg.data.extend(b'\x00' * 11)  # more than height * step: the tail is ignored
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_big_endian_16uc1():
    arr = np.array([[1, 256, 1000], [65535, 0, 4660]], dtype=np.uint16)
    msg = SimpleNamespace(height=2, width=3, encoding='16UC1', is_bigendian=1, step=6,
                          data=array.array('B', arr.astype('>u2').tobytes()))
    out = image_to_numpy(msg)
    assert out.dtype == np.dtype(np.uint16) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable  # a byte swap is a copy
    # the same bytes read as little-endian are swapped values
    msg.is_bigendian = 0
    np.testing.assert_array_equal(image_to_numpy(msg), arr.byteswap())
    np.testing.assert_allclose(depth_to_meters(SimpleNamespace(**{**vars(msg), 'is_bigendian': 1})),
                               np.where(arr > 0, arr / 1000.0, np.nan), rtol=1e-6)


@pytest.mark.parametrize('field, value, match', [
    ('height', 0, 'zero-size'),
    ('width', 0, 'zero-size'),
    ('step', 11, r'step=11 is smaller than width \* bytes_per_pixel = 4 \* 3 = 12'),
    ('data', array.array('B', bytes(12 * 3 - 1)), r'data has 35 bytes, fewer than height \* step'),
    ('data', array.array('B'), 'data has 0 bytes'),
    ('encoding', 'yuv422', 'unsupported encoding'),
    ('encoding', 'bayer_grbg8', 'unsupported encoding'),
])
def test_bad_messages_name_the_field(field, value, match):
    msg = _raw_msg(np.zeros((3, 4, 3), np.uint8), 'rgb8')
    setattr(msg, field, value)
    with pytest.raises(ImageFormatError, match=match):
        image_to_numpy(msg)
    with pytest.raises(ImageFormatError, match=match):
        to_rgb8(msg)


def test_data_as_bytes_or_list_is_read_too():
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    for data in (arr.tobytes(), list(arr.tobytes()), bytearray(arr.tobytes())):
        msg = SimpleNamespace(height=2, width=3, encoding='mono8', is_bigendian=0, step=3, data=data)
        np.testing.assert_array_equal(image_to_numpy(msg), arr)
    msg.data = ['a', 'b']
    with pytest.raises(ImageFormatError, match='data'):
        image_to_numpy(msg)


def test_numpy_to_image_rejects_bad_arrays():
    with pytest.raises(ImageFormatError, match=r'expected \(H, W, 3\)'):
        numpy_to_image(np.zeros((2, 2), np.uint8), 'rgb8')
    with pytest.raises(ImageFormatError, match=r'expected \(H, W\)'):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), 'mono8')
    with pytest.raises(ImageFormatError, match='dtype float64 does not fit encoding 32FC1'):
        numpy_to_image(np.zeros((2, 2)), '32FC1')
    with pytest.raises(ImageFormatError, match='dtype int16 does not fit encoding 16UC1'):
        numpy_to_image(np.zeros((2, 2), np.int16), '16UC1')
    with pytest.raises(ImageFormatError, match='zero-size'):
        numpy_to_image(np.zeros((0, 2, 3), np.uint8), 'rgb8')
    with pytest.raises(ImageFormatError, match='NumPy array'):
        numpy_to_image([[1, 2]], 'mono8')
    with pytest.raises(UnsupportedEncodingError):
        numpy_to_image(np.zeros((2, 2), np.uint8), 'bayer_rggb8')
    # (H, W, 1) is accepted for one channel, non-contiguous and big-endian inputs are normalised
    msg = numpy_to_image(np.arange(4, dtype=np.uint8).reshape(2, 2, 1), 'mono8')
    assert (msg.height, msg.width, msg.step) == (2, 2, 2)
    src = np.arange(24, dtype='>u2').reshape(4, 6)[:, ::2]
    msg = numpy_to_image(src, '16UC1')
    assert msg.is_bigendian == 0 and msg.step == 6
    np.testing.assert_array_equal(image_to_numpy(msg), src)


@pytest.fixture(params=['cv2', 'numpy'])
def rgb_path(request, monkeypatch):
    if request.param == 'numpy':
        monkeypatch.setattr(im, '_CV2', [None])
    return request.param


def test_to_rgb8_every_colour_encoding(rgb_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (5, 7, 1), dtype=np.uint8)
    mono = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    bgr = rgb[:, :, ::-1]
    cases = {
        'rgb8': (rgb, rgb), 'bgr8': (bgr, rgb),
        'rgba8': (np.concatenate([rgb, alpha], 2), rgb), 'bgra8': (np.concatenate([bgr, alpha], 2), rgb),
        'mono8': (mono, np.repeat(mono[:, :, None], 3, 2)), '8UC1': (mono, np.repeat(mono[:, :, None], 3, 2)),
        '8UC3': (bgr, rgb), '8UC4': (np.concatenate([bgr, alpha], 2), rgb),
        'rgb16': (rgb.astype(np.uint16) * 256 + 255, rgb), 'bgr16': (bgr.astype(np.uint16) * 256 + 7, rgb),
        'mono16': (mono.astype(np.uint16) * 256 + 128, np.repeat(mono[:, :, None], 3, 2)),
    }
    for enc, (arr, want) in cases.items():
        for pad in (0, 3):
            got = to_rgb8(_raw_msg(arr, enc, pad=pad))
            assert got.dtype == np.uint8 and got.shape == (5, 7, 3) and got.flags.c_contiguous, enc
            np.testing.assert_array_equal(got, want, err_msg=f'{enc} pad={pad} ({rgb_path})')
        np.testing.assert_array_equal(to_rgb8(np.asarray(arr), enc), want, err_msg=enc)
    # 8UC3 published as RGB by a driver
    np.testing.assert_array_equal(to_rgb8(rgb, '8UC3', generic_order='rgb'), rgb)
    np.testing.assert_array_equal(to_rgb8(np.concatenate([rgb, alpha], 2), '8UC4', generic_order='rgb'), rgb)


def test_to_rgb8_rejects_depth_and_mismatches():
    with pytest.raises(ImageFormatError, match='depth_to_meters'):
        to_rgb8(np.zeros((2, 2), np.uint16), '16UC1')
    with pytest.raises(ImageFormatError, match='32FC3 cannot be converted'):
        to_rgb8(np.zeros((2, 2, 3), np.float32), '32FC3')
    with pytest.raises(ImageFormatError, match='encoding: required'):
        to_rgb8(np.zeros((2, 2, 3), np.uint8))
    msg = _raw_msg(np.zeros((2, 2, 3), np.uint8), 'bgr8')
    with pytest.raises(ImageFormatError, match='disagrees'):
        to_rgb8(msg, 'rgb8')
    assert to_rgb8(msg, 'bgr8').shape == (2, 2, 3)
    with pytest.raises(ValueError, match='generic_order'):
        to_rgb8(msg, generic_order='grb')


def test_depth_to_meters_units_and_invalid_values():
    mm = np.array([[0, 1, 1000], [65535, 250, 0]], dtype=np.uint16)
    got = depth_to_meters(_raw_msg(mm, '16UC1', pad=2))
    assert got.dtype == np.float32 and got.flags.writeable
    want = np.array([[np.nan, 0.001, 1.0], [65.535, 0.25, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(got, want)  # exact: division by 1000 in float32
    np.testing.assert_array_equal(depth_to_meters(mm, 'mono16'), want)
    np.testing.assert_allclose(depth_to_meters(mm, '16UC1', unit_m=1e-4), want / 10, rtol=1e-6)

    m = np.array([[0.0, np.nan, np.inf], [-np.inf, -0.5, 1.25]], dtype=np.float32)
    msg = numpy_to_image(m, '32FC1')
    got = depth_to_meters(msg)
    np.testing.assert_array_equal(np.isnan(got), [[True, True, True], [True, True, False]])
    assert got[1, 2] == np.float32(1.25)
    assert not np.shares_memory(got, np.frombuffer(msg.data, np.uint8))  # never a view of the message
    with pytest.raises(ValueError, match='unit_m'):
        depth_to_meters(mm, '16UC1', unit_m=0.0)
    with pytest.raises(ImageFormatError, match='not a depth encoding'):
        depth_to_meters(np.zeros((2, 2, 3), np.uint8), 'rgb8')
    with pytest.raises(ImageFormatError, match='not a depth encoding'):
        depth_to_meters(np.zeros((2, 2), np.float64), '64FC1')


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8)))
def test_depth_nan_exactly_where_invalid(depth):
    got = depth_to_meters(numpy_to_image(depth, '32FC1'))
    valid = np.isfinite(depth) & (depth > 0)
    np.testing.assert_array_equal(np.isnan(got), ~valid)
    np.testing.assert_array_equal(got[valid], depth[valid])


def test_module_imports_without_ros(monkeypatch):
    for name in [n for n in sys.modules if n == 'sensor_msgs' or n.startswith('sensor_msgs.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'sensor_msgs', None)  # any import of it now fails
    spec = importlib.util.spec_from_file_location('_image_no_ros', im.__file__)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, '_image_no_ros', mod)
    spec.loader.exec_module(mod)
    arr = np.zeros((2, 3, 3), np.uint8)
    assert mod.to_rgb8(_raw_msg(arr, 'bgr8')).shape == (2, 3, 3)
    with pytest.raises(ImportError):
        mod.numpy_to_image(arr, 'rgb8')


def test_timing_640x480(capsys):
    """Prints figures (not asserted): 640x480 rgb8/bgr8 -> model input, and array -> message."""
    rgb = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    msgs = {enc: numpy_to_image(rgb, enc) for enc in ('rgb8', 'bgr8')}
    lines = []
    for name, fn in (('to_rgb8(rgb8)', lambda: to_rgb8(msgs['rgb8'])),
                     ('to_rgb8(bgr8)', lambda: to_rgb8(msgs['bgr8'])),
                     ('numpy_to_image(rgb8)', lambda: numpy_to_image(rgb, 'rgb8'))):
        fn()
        n = 50
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        lines.append(f'image.{name} 640x480: {(time.perf_counter() - t0) / n * 1e3:.3f} ms')
    with capsys.disabled():
        print('\n' + '\n'.join(lines))


# -- downscale ------------------------------------------------------------------------------------------
def _psnr(a, b):
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _smooth(w, h):
    x, y = np.meshgrid(np.linspace(0, 6 * np.pi, w), np.linspace(0, 4 * np.pi, h))
    return np.stack([127 + 100 * np.sin(x) * np.cos(y), 127 + 90 * np.cos(x + y), 127 + 80 * np.sin(y)],
                    axis=-1).astype(np.uint8)


def test_downscale_sizes_and_integer_factor_equals_area():
    import cv2
    from molmoact_ros.ros.image import downscale
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for size in ((336, 252), (320, 240), (96, 72), (160, 120)):
        for method in ('fast_area', 'area'):
            out = downscale(img, size, method)
            assert out.shape == (size[1], size[0], 3) and out.dtype == np.uint8
    for size in ((320, 240), (160, 120)):  # integer factors: exactly OpenCV's INTER_AREA
        assert np.array_equal(downscale(img, size), cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    assert np.array_equal(downscale(img, (336, 252), 'area'),
                          cv2.resize(img, (336, 252), interpolation=cv2.INTER_AREA))
    assert downscale(img, (640, 480)) is img


def test_downscale_fast_area_is_close_to_area_and_keeps_features_in_place():
    import cv2
    from molmoact_ros.ros.image import downscale
    from molmoact_ros.robot.geometry import resize_affine
    img = _smooth(640, 480)
    fast, exact = downscale(img, (336, 252)), downscale(img, (336, 252), 'area')
    assert _psnr(fast, exact) > 40.0
    # a bright square's centroid lands where the pixel-centre affine says (both methods)
    spot = np.zeros((480, 640), np.uint8)
    spot[300:310, 400:410] = 255
    affine = resize_affine(336, 252, 640, 480)  # model -> source pixels
    for method in ('fast_area', 'area'):
        small = downscale(spot, (336, 252), method).astype(np.float64)
        ys, xs = np.indices(small.shape)
        c = np.array([(xs * small).sum() / small.sum(), (ys * small).sum() / small.sum(), 1.0])
        src = affine @ c
        assert abs(src[0] - 404.5) < 0.6 and abs(src[1] - 304.5) < 0.6, (method, src)
    # sizes that do not divide by the integer factor fall back to INTER_AREA
    odd = _smooth(641, 481)
    assert np.array_equal(downscale(odd, (336, 252)), cv2.resize(odd, (336, 252), interpolation=cv2.INTER_AREA))


def test_downscale_rejects_bad_arguments():
    from molmoact_ros.ros.image import downscale
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError):
        downscale(img, (5, 5), 'nearest')
    with pytest.raises(ValueError):
        downscale(img, (0, 5))
