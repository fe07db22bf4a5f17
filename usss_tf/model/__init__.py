"""The model: backbones, heads and the subclassed ``UniversalSegmenter``."""

from usss_tf.model.segmenter import UniversalSegmenter

__all__ = ["UniversalSegmenter"]
