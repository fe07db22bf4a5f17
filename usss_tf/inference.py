"""Predicting a domain's images with a trained model: traced once, for every image size.

``DomainPredictor`` wraps the model's one inference path
(``UniversalSegmenter.segment`` / ``nearest_classes``: the domain's scale,
normalisation, encoder, decoder, bilinear upsampling, argmax) in
``tf.function``s with a size-agnostic input signature, so validation during
training, ``usss-tf evaluate``, the TensorBoard panels and the benchmarks trace
it once per domain and get the class ids the exported signatures return.

``load_examples`` and ``same_size_batches`` feed it: images are never padded
(padding would change what the encoder sees at the border), only images of one
size share a batch.
"""

import numpy as np
import tensorflow as tf

from usss_tf.data import pipeline
from usss_tf.serving import contract

_IMAGES = tf.TensorSpec([None, None, None, 3], tf.uint8)
_SIZE = tf.TensorSpec([2], tf.int32)


class DomainPredictor:
    """Class ids of ``domain`` (and the embedding branch's nearest classes) at any output size.

    Args:
      model: a built ``UniversalSegmenter``.
      domain: the name of the domain the images come from.
    """

    def __init__(self, model, domain):
        self.model = model
        self.domain = domain
        # No Python control flow on tensors here: autograph's conversion would only cost trace time.
        self._class_ids = tf.function(self._segment, input_signature=[_IMAGES, _SIZE],
                                      autograph=False)
        self._nearest = tf.function(self._nearest_class, input_signature=[_IMAGES, _SIZE],
                                    autograph=False)

    def _segment(self, images, size):
        return self.model.segment(images, self.domain, size)["class_ids"]

    def _nearest_class(self, images, size):
        return self.model.nearest_classes(images, self.domain, size)[f"nearest_class_{self.domain}"]

    def class_ids(self, images, output_size):
        """uint8 [B, H, W] class ids of uint8 images [B, h, w, 3], at ``output_size`` (H, W)."""
        return self._class_ids(tf.convert_to_tensor(images, tf.uint8),
                               tf.constant(output_size, tf.int32)).numpy()

    def nearest_class(self, images, output_size):
        """uint8 [B, H, W]: each pixel's nearest label centroid of the domain's own classes."""
        return self._nearest(tf.convert_to_tensor(images, tf.uint8),
                             tf.constant(output_size, tf.int32)).numpy()


class SavedModelPredictor:
    """``DomainPredictor``'s interface over an export's ``segment_<domain>_tensor`` signature.

    What ``usss-tf evaluate --saved-model`` scores: the exported graph (the
    domain's scale and the limits baked in), fed the decoded images. Class ids
    come at the input resolution; where a label has another size they are
    resized to it (nearest), as a client of the server would.

    Args:
      loaded: ``tf.saved_model.load`` of an export (kept alive here: it owns the variables).
      domain: the name of the domain the images come from.
    """

    def __init__(self, loaded, domain):
        name = contract.tensor_signature(domain)
        if name not in loaded.signatures:
            raise KeyError(f"the export has no signature {name!r}; it has: "
                           f"{', '.join(sorted(loaded.signatures))}")
        self.loaded = loaded
        self.domain = domain
        self._signature = loaded.signatures[name]

    def class_ids(self, images, output_size):
        ids = self._signature(images=tf.convert_to_tensor(images, tf.uint8))["class_ids"]
        if tuple(ids.shape[1:3]) != tuple(output_size):
            ids = tf.image.resize(ids[..., None], output_size, method="nearest")[..., 0]
        return ids.numpy()


def cached_predictor(cache, model, domain):
    """``cache[domain]`` if it predicts with ``model``, else a new ``DomainPredictor`` put there."""
    predictor = cache.get(domain)
    if predictor is None or predictor.model is not model:
        predictor = cache[domain] = DomainPredictor(model, domain)
    return predictor


def load_examples(examples, lookup_table):
    """Yields (example, image uint8 [H, W, 3], train-id label uint8 [h, w]), decoded in parallel."""
    paths = tf.data.Dataset.from_tensor_slices(
        (tf.constant([e.image for e in examples]), tf.constant([e.label for e in examples]))
    )

    def decode(image, label):
        return pipeline.decode_image(image), pipeline.decode_label(label, lookup_table)

    decoded = paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    decoded = decoded.prefetch(tf.data.AUTOTUNE)
    for example, (image, label) in zip(examples, decoded.as_numpy_iterator()):
        yield example, image, label


def same_size_batches(items, batch_size):
    """Groups consecutive ``(example, image, label)`` items of one image and label size."""
    batch = []
    for item in items:
        if batch and (item[1].shape != batch[0][1].shape or item[2].shape != batch[0][2].shape
                      or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def stack(batch):
    """(images uint8 [B, H, W, 3], labels uint8 [B, h, w]) of one ``same_size_batches`` batch."""
    return np.stack([image for _, image, _ in batch]), np.stack([label for _, _, label in batch])
