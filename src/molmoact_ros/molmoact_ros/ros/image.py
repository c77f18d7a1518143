"""``sensor_msgs/Image`` <-> NumPy without cv_bridge.

cv_bridge's Python module breaks under NumPy 2 (ros-perception/vision_opencv#535), so the suite reads
and writes image messages itself. The core of this module is NumPy only; ``sensor_msgs`` is imported
inside :func:`numpy_to_image` alone, so the module imports (and its readers work on any object with
the ``Image`` fields) without ROS.

Conventions
-----------
- Arrays are ``(H, W)`` for one-channel encodings and ``(H, W, C)`` otherwise, channels in the order
  the encoding names them (``bgr8`` stays B, G, R; use :func:`to_rgb8` for the model's input).
- :func:`image_to_numpy` returns a **read-only view** of ``msg.data`` whenever it can (any ``step``,
  host byte order): no copy. It copies only to swap bytes (``is_bigendian`` differs from the host) or
  when asked (``copy=True``). The view keeps the message's buffer alive (and, while it lives, the
  ``array.array`` in ``msg.data`` cannot be resized in place: BufferError; assigning a new ``data`` is
  fine); call ``.copy()`` (or pass ``copy=True``) to modify the pixels.
- ``data`` longer than ``height * step`` is accepted and the tail ignored; shorter is an error.
- Generic OpenCV encodings (``8UC3`` ...) carry no channel order. :func:`image_to_numpy` returns
  their channels as they are. :func:`to_rgb8` reads ``8UC3`` as **BGR** and ``8UC4`` as BGRA, because
  such messages almost always come from OpenCV arrays (BGR) published with cv_bridge's default
  ``"passthrough"`` encoding; pass ``generic_order='rgb'`` where a driver publishes RGB as ``8UC3``.
  (cv_bridge itself passes ``8UC3`` through unchanged to whichever colour encoding is asked for.)
- YUV, Bayer and compressed encodings are not supported: :class:`UnsupportedEncodingError` names the
  encodings that are.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    'ImageFormatError',
    'UnsupportedEncodingError',
    'EncodingInfo',
    'encoding_info',
    'supported_encodings',
    'image_to_numpy',
    'to_rgb8',
    'depth_to_meters',
    'numpy_to_image',
    'jpeg_round_trip',
    'center_crop_resize',
]


class ImageFormatError(ValueError):
    """A ``sensor_msgs/Image`` (or an array) does not describe a valid image of its encoding."""


class UnsupportedEncodingError(ImageFormatError):
    """The encoding is valid ROS but not one this converter reads (YUV, Bayer, ...)."""


@dataclass(frozen=True)
class EncodingInfo:
    """How one encoding lays out a pixel."""

    name: str          # canonical spelling, as written into messages
    dtype: np.dtype    # channel type in host byte order
    channels: int
    kind: str          # 'color' (named channel order), 'mono', 'depth' or 'generic'
    order: str = ''    # channel order for 'color': 'rgb', 'bgr', 'rgba', 'bgra'

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


def _build_table() -> dict[str, EncodingInfo]:
    table: dict[str, EncodingInfo] = {}

    def add(info: EncodingInfo) -> None:
        table[info.name.lower()] = info

    for bits, dt in ((8, np.uint8), (16, np.uint16)):
        for order in ('rgb', 'bgr', 'rgba', 'bgra'):
            add(EncodingInfo(f'{order}{bits}', np.dtype(dt), len(order), 'color', order))
        add(EncodingInfo(f'mono{bits}', np.dtype(dt), 1, 'mono'))
    # Generic OpenCV types. 16UC1 and 32FC1 are the REP 118 depth encodings.
    for depth, dt in (('8U', np.uint8), ('8S', np.int8), ('16U', np.uint16), ('16S', np.int16),
                      ('32S', np.int32), ('32F', np.float32), ('64F', np.float64)):
        for c in (1, 2, 3, 4):
            name = f'{depth}C{c}'
            kind = 'depth' if name in ('16UC1', '32FC1') else 'generic'
            add(EncodingInfo(name, np.dtype(dt), c, kind))
    return table


_ENCODINGS = _build_table()
_HOST_BIG_ENDIAN = sys.byteorder == 'big'


def supported_encodings() -> tuple[str, ...]:
    """Every encoding :func:`image_to_numpy` reads, canonical spelling."""
    return tuple(info.name for info in _ENCODINGS.values())


def encoding_info(encoding: str) -> EncodingInfo:
    """Layout of ``encoding`` (case-insensitive); :class:`UnsupportedEncodingError` when unknown."""
    info = _ENCODINGS.get(str(encoding).lower())
    if info is None:
        shown = ', '.join(n for n in supported_encodings() if not n[0].isdigit())
        raise UnsupportedEncodingError(
            f"unsupported encoding {encoding!r}: supported are {shown} and the OpenCV types "
            "8U/8S/16U/16S/32S/32F/64F C1..C4 (e.g. 16UC1, 32FC1, 8UC3); YUV, Bayer and "
            "compressed encodings are not (convert them upstream, e.g. image_proc debayer)")
    return info


def _buffer_of(data: Any) -> np.ndarray:
    """The message's ``data`` as a flat uint8 array, without a copy where it is a buffer."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        # A list of ints (possible when field checks are off and a caller set a plain list).
        arr = np.asarray(data)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in 'ui'):
            raise ImageFormatError(f'data: expected a byte buffer, got {type(data).__name__}') from None
        return arr.astype(np.uint8)


def image_to_numpy(msg: Any, *, copy: bool = False) -> np.ndarray:
    """Pixels of a ``sensor_msgs/Image`` as ``(H, W)`` or ``(H, W, C)`` in host byte order.

    Honours ``step`` (row padding) and ``is_bigendian``. Returns a read-only view of ``msg.data``
    unless a byte swap is needed or ``copy`` is true (then a writable, C-contiguous array).
    Raises :class:`ImageFormatError` naming the offending field.
    """
    info = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageFormatError(f'zero-size image: height={height}, width={width} (encoding {info.name})')
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise ImageFormatError(
            f'step={step} is smaller than width * bytes_per_pixel = {width} * {info.bytes_per_pixel} '
            f'= {row_bytes} (encoding {info.name})')
    buf = _buffer_of(msg.data)
    needed = height * step
    if buf.size < needed:
        raise ImageFormatError(
            f'data has {buf.size} bytes, fewer than height * step = {height} * {step} = {needed} '
            f'(encoding {info.name})')

    big = bool(msg.is_bigendian)
    swap = info.dtype.itemsize > 1 and big != _HOST_BIG_ENDIAN
    dtype = info.dtype.newbyteorder('>' if big else '<') if info.dtype.itemsize > 1 else info.dtype
    itemsize = info.dtype.itemsize
    if info.channels == 1:
        shape, strides = (height, width), (step, itemsize)
    else:
        shape = (height, width, info.channels)
        strides = (step, info.bytes_per_pixel, itemsize)
    out = np.ndarray(shape, dtype=dtype, buffer=buf, offset=0, strides=strides)
    if swap:
        return out.astype(info.dtype)  # byte-swapped, contiguous, writable copy
    if copy:
        return np.array(out, dtype=info.dtype, order='C')
    out.flags.writeable = False
    return out


def _array_and_info(msg_or_array: Any, encoding: str | None) -> tuple[np.ndarray, EncodingInfo]:
    if isinstance(msg_or_array, np.ndarray):
        if encoding is None:
            raise ImageFormatError('encoding: required when converting a NumPy array')
        info = encoding_info(encoding)
        return _check_array(msg_or_array, info), info
    if encoding is not None and encoding_info(encoding) is not encoding_info(msg_or_array.encoding):
        raise ImageFormatError(
            f'encoding: argument {encoding!r} disagrees with the message\'s {msg_or_array.encoding!r}')
    return image_to_numpy(msg_or_array), encoding_info(msg_or_array.encoding)


def _check_array(array_: np.ndarray, info: EncodingInfo) -> np.ndarray:
    """Validate ``array_`` against ``info``; returns it as (H, W) or (H, W, C)."""
    a = array_
    if a.ndim == 3 and info.channels == 1 and a.shape[2] == 1:
        a = a[:, :, 0]
    expected = '(H, W)' if info.channels == 1 else f'(H, W, {info.channels})'
    if (info.channels == 1 and a.ndim != 2) or (
            info.channels > 1 and (a.ndim != 3 or a.shape[2] != info.channels)):
        raise ImageFormatError(f'array shape {array_.shape} does not fit encoding {info.name}: expected {expected}')
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageFormatError(f'zero-size image: array shape {array_.shape}')
    if a.dtype.newbyteorder('=') != info.dtype.newbyteorder('=') or a.dtype.kind != info.dtype.kind:
        raise ImageFormatError(f'array dtype {a.dtype} does not fit encoding {info.name}: expected {info.dtype}')
    return a


_GENERIC_ORDERS = ('bgr', 'rgb')


def to_rgb8(msg_or_array: Any, encoding: str | None = None, *, generic_order: str = 'bgr') -> np.ndarray:
    """The image as ``(H, W, 3)`` uint8 RGB, C-contiguous: the model's input.

    ``msg_or_array``: a ``sensor_msgs/Image`` (``encoding`` optional, must agree) or an array
    (``encoding`` required). BGR is swapped to RGB, alpha dropped, mono repeated into three channels,
    16-bit colour and mono16 scaled to 8 bits by ``>> 8`` (cv_bridge's 1/256). ``8UC3``/``8UC4`` are read
    as ``generic_order`` ('bgr', the default: OpenCV arrays, or 'rgb'); ``8UC1`` as mono. An rgb8 input
    without row padding comes back as the same read-only view (no copy). Depth and other generic
    encodings raise :class:`ImageFormatError` (use :func:`depth_to_meters` for depth).
    """
    if generic_order not in _GENERIC_ORDERS:
        raise ValueError(f'generic_order must be one of {_GENERIC_ORDERS}, got {generic_order!r}')
    a, info = _array_and_info(msg_or_array, encoding)
    kind, order = info.kind, info.order
    if kind == 'generic' and info.dtype == np.uint8 and info.channels in (1, 3, 4):
        kind = 'mono' if info.channels == 1 else 'color'
        order = generic_order + ('a' if info.channels == 4 else '')
    if kind not in ('color', 'mono'):
        hint = ' (a depth image: use depth_to_meters)' if kind == 'depth' else ''
        raise ImageFormatError(f'encoding {info.name} cannot be converted to rgb8{hint}')
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if kind == 'color' and order == 'rgb':
        return np.ascontiguousarray(a)
    cv2 = _cv2()
    if cv2 is not None:  # about 40x faster than NumPy's strided copy (0.05 vs 1.9 ms at 640x480)
        code = {'mono': cv2.COLOR_GRAY2RGB, 'rgba': cv2.COLOR_RGBA2RGB, 'bgr': cv2.COLOR_BGR2RGB,
                'bgra': cv2.COLOR_BGRA2RGB}['mono' if kind == 'mono' else order]
        return cv2.cvtColor(a, code)
    if kind == 'mono':
        out = np.repeat(a[:, :, None], 3, axis=2)
    elif order == 'rgba':
        out = a[:, :, :3]
    else:  # bgr, bgra
        out = a[:, :, 2::-1]
    return np.ascontiguousarray(out)


_CV2: list = []


def _cv2():
    """OpenCV when importable (imported on first use), else None: the NumPy path serves."""
    if not _CV2:
        try:
            import cv2
        except ImportError:  # pragma: no cover - opencv-python-headless is a runtime dependency
            cv2 = None
        _CV2.append(cv2)
    return _CV2[0]


def depth_to_meters(msg_or_array: Any, encoding: str | None = None, *,
                    unit_m: float = 1e-3) -> np.ndarray:
    """A depth image as ``(H, W)`` float32 metres, invalid pixels NaN (always a new array).

    ``16UC1`` and ``mono16`` are millimetres (REP 118; ``unit_m``, metres per integer unit, serves
    sensors with other units), ``32FC1`` metres. 0, negative, NaN and +-inf all become NaN.
    """
    if not (np.isfinite(unit_m) and unit_m > 0):
        raise ValueError(f'unit_m must be a positive number of metres, got {unit_m!r}')
    a, info = _array_and_info(msg_or_array, encoding)
    if info.channels != 1 or info.dtype not in (np.dtype(np.uint16), np.dtype(np.float32)):
        raise ImageFormatError(
            f'encoding {info.name} is not a depth encoding: expected 16UC1 (mm), mono16 (mm) or 32FC1 (m)')
    if info.dtype == np.uint16:
        out = a.astype(np.float32)
        out /= np.float32(1.0 / unit_m)  # division: 16UC1 mm are exact to the float32 rounding
    else:
        out = np.array(a, dtype=np.float32, order='C')
    out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def numpy_to_image(array_: np.ndarray, encoding: str, header: Any = None):
    """A ``sensor_msgs/Image`` holding ``array_`` (one copy into an ``array.array('B')``).

    ``array_`` must be ``(H, W)`` (or ``(H, W, 1)``) for one channel or ``(H, W, C)``, with exactly
    the encoding's dtype (no silent casts). ``step = width * bytes_per_pixel``, ``is_bigendian = 0``
    (little-endian data whatever the host). ``header``: a ``std_msgs/Header`` (default: empty).
    """
    from sensor_msgs.msg import Image  # ROS import only where a message is built

    if not isinstance(array_, np.ndarray):
        raise ImageFormatError(f'expected a NumPy array, got {type(array_).__name__}')
    info = encoding_info(encoding)
    a = _check_array(array_, info)
    a = np.ascontiguousarray(a, dtype=info.dtype.newbyteorder('<'))
    data = array.array('B')
    data.frombytes(a.reshape(-1).view(np.uint8))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = info.name
    msg.is_bigendian = 0
    msg.step = int(a.shape[1]) * info.bytes_per_pixel
    msg.data = data
    return msg


RESIZE_METHODS = ('fast_area', 'area')


def downscale(image: np.ndarray, size: tuple[int, int], method: str = 'fast_area') -> np.ndarray:
    """Downscale ``image`` (H, W[, C]) to ``size`` = (width, height), pixel-centre aligned like
    ``cv2.resize`` (so :func:`~molmoact_ros.robot.geometry.resize_affine` maps the result back).

    ``area`` is OpenCV's INTER_AREA (exact pixel-area weights). At a non-integer factor it takes OpenCV's
    slow path: 3-4 ms for 640x480 -> 336x252 on a 2-core machine, a third of the pipeline's per-step
    budget. ``fast_area`` box-filters by the integer factor k = ceil(W / width) when the image divides by
    it (INTER_AREA's fast path; the result is at most one k-th smaller than ``size``) and interpolates
    bilinearly up to ``size`` (a factor below k / (k - 1)): about 0.4 ms for the same frame. It equals
    ``area`` for integer factors and differs by a slight blur otherwise (about 55 dB PSNR against ``area`` on
    smooth content); sizes that do not divide by k use ``area``. Images not larger than ``size`` are
    resized with bilinear interpolation in both methods.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f'resize method must be one of {RESIZE_METHODS}, got {method!r}')
    cv2 = _cv2()
    if cv2 is None:  # pragma: no cover - opencv-python-headless is a runtime dependency
        raise RuntimeError('downscaling images needs OpenCV (opencv-python-headless)')
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f'target size must be positive, got {size}')
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if w <= width and h <= height:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if method == 'fast_area':
        k = max(-(-w // width), -(-h // height))
        if k >= 2 and w % k == 0 and h % k == 0:
            boxed = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
            if boxed.shape[1] == width and boxed.shape[0] == height:
                return boxed
            return cv2.resize(boxed, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def jpeg_round_trip(rgb: np.ndarray, quality: int = 95) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 encoded as JPEG at ``quality`` and decoded again (Pillow/libjpeg, 4:2:0 chroma),
    like the released LIBERO evaluator's ``tf.image.encode_jpeg`` (quality 95, chroma downsampled) and
    decode, which mimic the compression of its training data (the RLDS dataset builder)."""
    import io

    from PIL import Image

    quality = int(quality)
    if not 1 <= quality <= 100:
        raise ValueError(f'JPEG quality must be within 1..100, got {quality}')
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageFormatError(f'expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}')
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), 'RGB').save(buffer, format='JPEG', quality=quality,
                                                           subsampling='4:2:0')
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert('RGB'))


def center_crop_resize(image: np.ndarray, area_fraction: float) -> np.ndarray:
    """The centred crop holding ``area_fraction`` of ``image`` (H, W[, C], uint8), resized back to (W, H) with
    Pillow's bilinear filter, as the released LIBERO evaluator does before the processor (0.9).
    :func:`~molmoact_ros.robot.geometry.center_crop_affine` maps its pixels back to ``image``'s."""
    from PIL import Image

    from ..robot.geometry import center_crop_box

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ImageFormatError(f'expected an (H, W[, C]) uint8 image, got {image.dtype} {image.shape}')
    h, w = image.shape[:2]
    left, top, crop_w, crop_h = center_crop_box(w, h, area_fraction)
    if (crop_w, crop_h) == (w, h):
        return image
    cropped = Image.fromarray(np.ascontiguousarray(image[top:top + crop_h, left:left + crop_w]))
    return np.asarray(cropped.resize((w, h), Image.BILINEAR))
