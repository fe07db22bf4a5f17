import numpy as np
import tensorflow as tf

from usss_tf import inference
from usss_tf.model.segmenter import UniversalSegmenter


def test_predictor_traces_once_and_equals_the_models_inference_path():
    model = UniversalSegmenter({"a": 3, "b": 4}, width=0.125, depth=0.25, embedding_dim=8, scales={"a": 0.5})
    model.build()
    predictor = inference.DomainPredictor(model, "a")
    rng = np.random.default_rng(0)
    for size, out in (((32, 48), (32, 48)), ((24, 40), (12, 20))):
        images = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
        ids = predictor.class_ids(images, out)
        assert ids.dtype == np.uint8 and ids.shape == (2, *out)
        np.testing.assert_array_equal(ids, model.segment(tf.constant(images), "a", out)["class_ids"])
        nearest = predictor.nearest_class(images, out)
        expected = model.nearest_classes(tf.constant(images), "a", out)["nearest_class_a"]
        np.testing.assert_array_equal(nearest, expected)
    assert predictor._class_ids.experimental_get_tracing_count() == 1  # One trace for every size.
    cache = {}
    assert inference.cached_predictor(cache, model, "a") is inference.cached_predictor(cache, model, "a")


def test_same_size_batches_never_mix_sizes():
    def item(h, w, lh=None):
        return ("key", np.zeros((h, w, 3)), np.zeros((lh or h, w)))

    items = [item(4, 4), item(4, 4), item(4, 4), item(2, 4), item(4, 4, lh=2), item(4, 4, lh=2)]
    batches = list(inference.same_size_batches(items, batch_size=2))
    assert [len(b) for b in batches] == [2, 1, 1, 2]
    images, labels = inference.stack(batches[-1])
    assert images.shape == (2, 4, 4, 3) and labels.shape == (2, 2, 4)
