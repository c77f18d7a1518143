"""An MCAP file of ROS 2 messages as ``ros2 bag`` and Foxglove read them, ROS-free (PyPI ``mcap``).

Profile ``ros2``; one schema per message type (encoding ``ros2msg``, named ``pkg/msg/Type``, the text of
:func:`.msgdefs.schema_text`); one channel per topic (message encoding ``cdr``, the serialized bytes as they
came off the wire); zstd-compressed chunks. Thread-safe: callbacks of several executor threads may write.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, Optional

from mcap.writer import CompressionType, Writer

__all__ = ['McapRecorder']


class McapRecorder:
    """``add_topic`` once per topic, ``write`` each message, ``close`` at the end (idempotent)."""

    def __init__(self, path: Path, *, library: str = 'molmoact_ros demo', max_bytes: int = 2 * 1024**3):
        self.path = Path(path)
        self._file = self.path.open('wb')
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile='ros2', library=library)
        self._lock = threading.Lock()
        self._schemas: Dict[str, int] = {}
        self._channels: Dict[str, int] = {}
        self.counts: Dict[str, int] = {}
        self.bytes_written = 0
        self.max_bytes = int(max_bytes)
        self.dropped_over_limit = 0
        self.closed = False

    def add_topic(self, topic: str, type_name: str, schema: str, offered_qos_profiles: str = '') -> int:
        """Register ``topic`` (type ``pkg/msg/Type``, its ros2msg schema); returns the channel id."""
        with self._lock:
            if topic in self._channels:
                return self._channels[topic]
            if type_name not in self._schemas:
                self._schemas[type_name] = self._writer.register_schema(name=type_name, encoding='ros2msg',
                                                                        data=schema.encode())
            metadata = {'offered_qos_profiles': offered_qos_profiles} if offered_qos_profiles else {}
            cid = self._writer.register_channel(topic=topic, message_encoding='cdr',
                                                schema_id=self._schemas[type_name], metadata=metadata)
            self._channels[topic] = cid
            self.counts[topic] = 0
            return cid

    def write(self, topic: str, data: bytes, log_time_ns: Optional[int] = None) -> bool:
        """Append one serialized (CDR) message; False once closed or past ``max_bytes`` (counted)."""
        now = time.time_ns() if log_time_ns is None else int(log_time_ns)
        with self._lock:
            if self.closed:
                return False
            if self.bytes_written + len(data) > self.max_bytes:
                self.dropped_over_limit += 1
                return False
            self._writer.add_message(channel_id=self._channels[topic], log_time=now, data=bytes(data),
                                     publish_time=now, sequence=self.counts[topic])
            self.counts[topic] += 1
            self.bytes_written += len(data)
            return True

    @property
    def topics(self):
        return dict(self._channels)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._writer.finish()
            self._file.close()
