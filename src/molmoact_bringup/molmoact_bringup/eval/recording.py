"""One MCAP file per episode, from one set of raw subscriptions (ROS-free apart from what the caller
subscribes with): :class:`EpisodeRecording` keeps the topics' schemas and sends each serialized message to
the current episode's :class:`~molmoact_bringup.demo.recording.McapRecorder`, if one is open."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..demo.recording import McapRecorder

__all__ = ['EpisodeRecording']


class EpisodeRecording:
    """``add_topic`` once per topic; ``begin(path)`` / ``end()`` around each episode; ``write`` from callbacks
    (messages outside an episode are not kept). Thread-safe."""

    def __init__(self, library: str = 'molmoact_ros evaluate'):
        self.library = library
        self._topics: Dict[str, Tuple[str, str]] = {}
        self._current: Optional[McapRecorder] = None
        self._lock = threading.Lock()

    def add_topic(self, topic: str, type_name: str, schema: str) -> None:
        with self._lock:
            self._topics[topic] = (type_name, schema)
            if self._current is not None:
                self._current.add_topic(topic, type_name, schema)

    def begin(self, path: Path) -> None:
        """Close the open episode's file, if any, and start writing ``path``."""
        self.end()
        recorder = McapRecorder(Path(path), library=self.library)
        with self._lock:
            for topic, (type_name, schema) in self._topics.items():
                recorder.add_topic(topic, type_name, schema)
            self._current = recorder

    def write(self, topic: str, data: bytes) -> bool:
        with self._lock:
            recorder = self._current
        return recorder is not None and topic in recorder.topics and recorder.write(topic, data)

    def end(self) -> Optional[Dict[str, int]]:
        """Close the current file; its per-topic message counts (None when none was open)."""
        with self._lock:
            recorder, self._current = self._current, None
        if recorder is None:
            return None
        recorder.close()
        return dict(recorder.counts)
