"""Export for TF Serving: layout, signatures, TF1-loader equality with Keras, warm-up, CLI.

One export of the shared ``tiny_run`` (synth_city 10 classes + synth_camvid 7
classes), ``tiny_export``, is written once per session and reused: exporting
costs tens of seconds.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from usss_tf import evaluate, export, metrics, runs, testing
from usss_tf.serving import contract
from usss_tf.data import readers
from usss_tf.cli import main
from usss_tf.errors import ConfigError, ExportError

DOMAINS = {"synth_city": 10, "synth_camvid": 7}
SIGNATURES = [
    "serving_default",
    "segment_synth_city", "segment_synth_city_tensor",
    "segment_synth_camvid", "segment_synth_camvid_tensor",
    "embed", "embed_synth_city", "embed_synth_camvid",
]  # fmt: skip
EMBEDDING_DIM = 8  # tests/conftest.py TINY_RUN
SCALES = {"synth_city": 0.5, "synth_camvid": 0.75}  # tests/conftest.py TINY_SCALES


@pytest.fixture(scope="module")
def trained(tiny_run):
    return runs.load_run(tiny_run)


@pytest.fixture(scope="module")
def model_base(tiny_export):
    """A model base holding version 1, exported from the tiny run (shared: read only)."""
    return tiny_export.parent


@pytest.fixture(scope="module")
def version_dir(model_base):
    return model_base / "1"


@pytest.fixture(scope="module")
def reloaded(version_dir):
    return tf.saved_model.load(str(version_dir))


@pytest.fixture(scope="module")
def images(tiny_run):
    """uint8 [3, 32, 64, 3]: two synth_city and one synth_camvid validation image."""
    data = pathlib.Path(tiny_run).parent / "data"
    paths = sorted((data / "synth_city").rglob("*_leftImg8bit.png"))[:2]
    paths += sorted((data / "synth_camvid" / "val").glob("*.png"))[:1]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def _png(image):
    return tf.io.encode_png(image).numpy()


def _keras_probabilities(model, images):
    outputs = model(images.astype("float32"), training=False)
    return {d: tf.nn.softmax(outputs[d]).numpy() for d in DOMAINS}


def _keras_class_ids(model, images):
    return {d: np.argmax(p, axis=-1) for d, p in _keras_probabilities(model, images).items()}


def _meta_graph(version_dir):
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    return saved_model.meta_graphs[0]


# -- layout ------------------------------------------------------------------------------


def test_layout_and_domain_assets(model_base, version_dir):
    assert sorted(p.name for p in model_base.iterdir()) == ["1"]  # No temporary folder left.
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables" / "variables.index").is_file()
    manifest = json.loads((version_dir / "assets" / "domains.json").read_text())
    extra = json.loads((version_dir / "assets.extra" / "usss_domains.json").read_text())
    assert manifest == extra
    assert manifest["format"] == contract.EXPORT_FORMAT == 2
    assert manifest["max_image_pixels"] == contract.MAX_IMAGE_PIXELS >= 2 * 2048 * 2048
    assert manifest["max_request_pixels"] == contract.MAX_REQUEST_PIXELS
    domains = manifest["domains"]
    assert [d["name"] for d in domains] == list(DOMAINS)
    for entry in domains:
        assert entry["num_classes"] == DOMAINS[entry["name"]]
        assert len(entry["class_names"]) == len(entry["palette"]) == entry["num_classes"]
        assert entry["ignore_label"] == 255
        assert entry["scale"] == SCALES[entry["name"]]
    assert domains[1]["class_names"][5] == "vehicle"
    assert (version_dir / "assets.extra" / "tf_serving_warmup_requests").is_file()


def test_the_export_holds_every_serving_weight_and_not_the_reconstruction_head(trained, version_dir):
    model = trained.model
    assert model.reconstruction  # the tiny run has a masked stage
    saved = [name for name, _ in tf.train.list_variables(str(version_dir / "variables" / "variables"))
             if name.endswith("VARIABLE_VALUE")]
    assert len(saved) == len(model.weights) - len(model.reconstruction_head.weights) > 0


def test_domains_asset_is_a_savedmodel_asset(reloaded, version_dir):
    path = pathlib.Path(reloaded.domains_asset.asset_path.numpy().decode())
    assert path == version_dir / "assets" / "domains.json"


def test_next_version_ignores_non_integer_folders(tmp_path):
    assert export.next_version(tmp_path / "missing") == 1
    for name in ("1", "3", "tmp-4", ".tmp-9-abc", "latest"):
        (tmp_path / name).mkdir()
    assert export.existing_versions(tmp_path) == [1, 3]
    assert export.next_version(tmp_path) == 4


def test_existing_version_is_refused(tiny_run, model_base):
    with pytest.raises(ExportError, match=f"{model_base / '1'} already exists"):
        export.export_run(tiny_run, model_base=model_base, version=1)
    assert sorted(p.name for p in model_base.iterdir()) == ["1"]


def test_failed_export_leaves_nothing_and_unfinished_run_warns(tiny_run, tmp_path, monkeypatch):
    # An unfinished copy of the run: no metrics.json.
    run = pathlib.Path(shutil.copytree(tiny_run, tmp_path / "run"))
    (run / "metrics.json").unlink()

    def half_export(model, domains, export_dir, **kwargs):
        (pathlib.Path(export_dir) / "variables").mkdir(parents=True)
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "export_model", half_export)
    messages = []
    base = tmp_path / "models"
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_run(run, model_base=base, echo=messages.append)
    assert list(base.iterdir()) == []
    assert len(messages) == 1 and "has not finished" in messages[0]


def test_model_and_domains_must_agree(trained, tmp_path):
    with pytest.raises(ExportError, match="model's order"):
        export.export_model(trained.model, trained.domains[::-1], tmp_path / "x")
    assert not (tmp_path / "x").exists()


# -- signatures --------------------------------------------------------------------------


def _expected_outputs(name):
    """{output key: (dtype, rank, last dim or None)} of one signature."""
    if name.startswith("embed"):
        outputs = {"embeddings": (tf.float32, 4, EMBEDDING_DIM)}
        outputs.update({f"nearest_class_{d}": (tf.uint8, 3, None) for d in DOMAINS})
        return outputs
    domain = "synth_city" if name == "serving_default" else name[len("segment_"):]
    domain = domain.removesuffix("_tensor")
    return {"class_ids": (tf.uint8, 3, None), "probabilities": (tf.float32, 4, DOMAINS[domain])}


def _expected_input(name):
    if name.endswith("_tensor"):
        return tf.uint8, [None, None, None, 3]
    return tf.string, [None]


def test_signatures_read_back_with_tf_saved_model_load(reloaded):
    assert contract.signature_names(DOMAINS) == SIGNATURES
    assert sorted(reloaded.signatures) == sorted(SIGNATURES)
    for name in SIGNATURES:
        function = reloaded.signatures[name]
        specs = function.structured_input_signature[1]
        assert list(specs) == ["images"], name
        dtype, shape = _expected_input(name)
        assert specs["images"].dtype == dtype and specs["images"].shape.as_list() == shape, name
        outputs = function.structured_outputs
        expected = _expected_outputs(name)
        assert sorted(outputs) == sorted(expected), name
        for key, (out_dtype, rank, last) in expected.items():
            assert outputs[key].dtype == out_dtype, (name, key)
            assert outputs[key].shape.rank == rank, (name, key)
            assert outputs[key].shape[-1] == last, (name, key)


def test_signatures_in_the_meta_graph(version_dir):
    meta_graph = _meta_graph(version_dir)
    assert list(meta_graph.meta_info_def.tags) == ["serve"]
    signatures = meta_graph.signature_def
    assert set(SIGNATURES) <= set(signatures)
    for name in SIGNATURES:
        signature = signatures[name]
        assert signature.method_name == "tensorflow/serving/predict"
        dtype, shape = _expected_input(name)
        images = signature.inputs["images"]
        assert list(signature.inputs) == ["images"]
        assert images.dtype == dtype.as_datatype_enum, name
        assert [d.size for d in images.tensor_shape.dim] == [-1 if s is None else s for s in shape]
        expected = _expected_outputs(name)
        assert sorted(signature.outputs) == sorted(expected), name
        for key, (out_dtype, rank, last) in expected.items():
            dims = [d.size for d in signature.outputs[key].tensor_shape.dim]
            assert signature.outputs[key].dtype == out_dtype.as_datatype_enum, (name, key)
            assert len(dims) == rank and dims[-1] == (last or -1), (name, key, dims)
    default, first = signatures["serving_default"], signatures["segment_synth_city"]
    assert default.outputs["class_ids"].dtype == first.outputs["class_ids"].dtype


def _cli_section(shown, name):
    """The part of ``saved_model_cli show --all`` output that describes one signature."""
    return shown.split(f"signature_def['{name}']")[1].split("signature_def[")[0]


def test_saved_model_cli_shows_every_signature(version_dir):
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(version_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shown = result.stdout
    for name in SIGNATURES:
        assert f"signature_def['{name}']" in shown, name
    section = _cli_section(shown, "segment_synth_camvid_tensor")
    assert "inputs['images'] tensor_info:" in section
    assert "dtype: DT_UINT8" in section and "shape: (-1, -1, -1, 3)" in section
    assert "outputs['class_ids'] tensor_info:" in section
    assert "outputs['probabilities'] tensor_info:" in section
    assert "shape: (-1, -1, -1, 7)" in section
    embed_section = _cli_section(shown, "embed")
    assert "dtype: DT_STRING" in embed_section
    for key in ("embeddings", "nearest_class_synth_city", "nearest_class_synth_camvid"):
        assert f"outputs['{key}']" in embed_section, key


# -- equality with the Keras model -------------------------------------------------------


@pytest.fixture(scope="module")
def tf1_session(version_dir):
    """The export loaded by the TF1 session loader, the kind TF Serving uses."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():  # Only while loading: the other tests stay eager.
        meta_graph = tf.compat.v1.saved_model.loader.load(
            session, [contract.SERVING_TAG], str(version_dir)
        )
    yield session, meta_graph
    session.close()


def _run_tf1(tf1_session, feeds):
    """Runs ``{signature: images}`` by tensor names from the signature defs.

    Returns ``{signature: {output: value}}``, or the error a signature raised.
    """
    session, meta_graph = tf1_session
    results = {}
    for name, images in feeds.items():
        signature = meta_graph.signature_def[name]
        fetches = {key: info.name for key, info in signature.outputs.items()}
        try:
            results[name] = session.run(fetches, {signature.inputs["images"].name: images})
        except tf.errors.InvalidArgumentError as error:
            results[name] = error
    return results


def test_tf1_session_loader_matches_keras(trained, tf1_session, images):
    probabilities = _keras_probabilities(trained.model, images)
    expected = {d: np.argmax(p, axis=-1) for d, p in probabilities.items()}
    pngs = np.array([_png(image) for image in images], dtype=object)
    feeds = {"serving_default": pngs}
    for domain in DOMAINS:
        feeds[f"segment_{domain}"] = pngs
        feeds[f"segment_{domain}_tensor"] = images
    results = _run_tf1(tf1_session, feeds)
    for name, outputs in results.items():
        domain = "synth_city" if name == "serving_default" else name[8:].removesuffix("_tensor")
        assert outputs["class_ids"].dtype == np.uint8
        np.testing.assert_array_equal(outputs["class_ids"], expected[domain], err_msg=name)
        np.testing.assert_allclose(outputs["probabilities"], probabilities[domain], atol=1e-5,
                                   err_msg=name)
    # The maps are not constant: the comparison means something (the tiny model's class map
    # may be one class on these images; its probabilities still vary from pixel to pixel).
    for domain in DOMAINS:
        assert np.ptp(probabilities[domain], axis=(1, 2)).max() > 1e-3


def test_tf1_session_loader_reports_bad_requests(tf1_session, images):
    mixed = np.array([_png(images[0]), _png(images[1, :16])], dtype=object)
    junk = np.array([_png(images[0]), b"GIF89a not a picture"], dtype=object)
    results = _run_tf1(tf1_session, {"segment_synth_city": mixed, "embed": junk})
    assert "same size" in results["segment_synth_city"].message
    assert "element 1 is not a PNG or JPEG image" in results["embed"].message


def test_tf_saved_model_load_matches_keras_at_another_size(trained, reloaded):
    # An odd size exercises the padded pooling and the bilinear upsampling.
    images = np.random.default_rng(0).integers(0, 256, (2, 37, 61, 3), dtype=np.uint8)
    expected = _keras_class_ids(trained.model, images)
    pngs = tf.constant([_png(image) for image in images])
    for domain in DOMAINS:
        from_bytes = reloaded.signatures[f"segment_{domain}"](images=pngs)
        from_tensor = reloaded.signatures[f"segment_{domain}_tensor"](images=tf.constant(images))
        for outputs in (from_bytes, from_tensor):
            np.testing.assert_array_equal(outputs["class_ids"].numpy(), expected[domain])
        keras_probabilities = tf.nn.softmax(trained.model(images.astype("float32"))[domain])
        np.testing.assert_allclose(
            from_tensor["probabilities"].numpy(), keras_probabilities.numpy(), atol=1e-5
        )


def test_jpeg_and_grayscale_png_are_accepted(reloaded, images):
    gray = tf.io.encode_png(tf.image.rgb_to_grayscale(images[0])).numpy()
    batch = tf.constant([tf.io.encode_jpeg(images[0]).numpy(), gray])
    outputs = reloaded.signatures["serving_default"](images=batch)
    assert outputs["class_ids"].shape == (2, 32, 64)


@pytest.mark.parametrize("signature,source,grid", [
    ("embed", "synth_city", (2, 4)),  # 32x64 at synth_city's scale 0.5 -> 16x32, stride 8.
    ("embed_synth_city", "synth_city", (2, 4)),
    ("embed_synth_camvid", "synth_camvid", (3, 6)),  # at 0.75 -> 24x48.
])
def test_embed_labels_one_image_in_every_label_space(trained, reloaded, images, signature, source,
                                                     grid):
    outputs = reloaded.signatures[signature](images=tf.constant([_png(i) for i in images]))
    embeddings = outputs["embeddings"].numpy()
    assert embeddings.shape == (3, *grid, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-4)
    model = trained.model
    scaled = tf.image.resize(images.astype("float32"), (grid[0] * 8, grid[1] * 8), "bilinear")
    reference = model.embed(model.encode(model.preprocessor(source).normalize(scaled)))
    np.testing.assert_allclose(embeddings, reference.numpy(), atol=1e-5)
    for domain, num_classes in DOMAINS.items():
        nearest = outputs[f"nearest_class_{domain}"].numpy()
        assert nearest.dtype == np.uint8 and nearest.shape == (3, 32, 64)
        assert nearest.max() < num_classes
        similarity = tf.image.resize(model.similarity_logits(reference, domain), (32, 64))
        np.testing.assert_array_equal(nearest, np.argmax(similarity.numpy(), axis=-1))


@pytest.mark.parametrize(
    "signature,batch,message",
    [
        ("segment_synth_camvid", "mixed", "all images of one request must have the same size"),
        ("embed", "mixed", "same size; image 0 is 32x64, image 1 is 16x64"),
        ("segment_synth_city", "junk", "element 1 is not a PNG or JPEG image"),
        ("segment_synth_city", "empty", "holds no images"),
    ],
)
def test_bad_requests_fail_with_a_message(reloaded, images, signature, batch, message):
    batches = {
        "mixed": [_png(images[0]), _png(images[1, :16])],
        "junk": [_png(images[0]), b"\x00\x01 not an image"],
        "empty": [],
    }
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        reloaded.signatures[signature](images=tf.constant(batches[batch], dtype=tf.string))


# -- the served model predicts what evaluation measured ---------------------------------


def _val_examples(run_dir, domain):
    config = runs.read_config(run_dir)
    root = next(d.root for d in config.domains if d.name == domain.name)
    return readers.list_examples(domain, root, "val")


def test_served_class_ids_equal_what_evaluate_writes(tiny_run, trained, reloaded, tf1_session,
                                                     tmp_path):
    """The dataset's own files through each domain's bytes signature (both loaders) give,
    pixel for pixel, the raw-id predictions ``usss-tf evaluate --predictions`` writes,
    and the same mIoU: synth_city is served at scale 0.5, synth_camvid at 0.75."""
    results = evaluate.evaluate_run(tiny_run, predictions_dir=tmp_path / "pred")
    session, meta_graph = tf1_session
    for domain in trained.domains:
        examples = _val_examples(tiny_run, domain)
        files = np.array([pathlib.Path(e.image).read_bytes() for e in examples], dtype=object)
        signature = contract.segment_signature(domain.name)
        batched = reloaded.signatures[signature](images=tf.constant(files))["class_ids"].numpy()
        info = meta_graph.signature_def[signature]
        one_by_one = np.concatenate([
            session.run(info.outputs["class_ids"].name, {info.inputs["images"].name: files[i:i + 1]})
            for i in range(len(files))
        ])
        np.testing.assert_array_equal(batched, one_by_one)
        to_raw = evaluate.train_to_raw(domain)
        table = domain.lookup_table()
        confusion = np.zeros((domain.num_classes,) * 2, np.int64)
        for example, ids in zip(examples, batched):
            written = tmp_path / "pred" / domain.name / "ids" / f"{evaluate._prediction_name(example)}.png"
            np.testing.assert_array_equal(to_raw[ids], np.asarray(Image.open(written)),
                                          err_msg=str(written))
            label = table[np.asarray(Image.open(example.label))]
            confusion += metrics.confusion_matrix(label, ids, domain.num_classes)
        served = metrics.summarize(confusion, list(domain.class_names))
        assert abs(served["miou"] - results[domain.name]["miou"]) < 1e-6
        assert len(np.unique(batched)) > 1  # Not a constant map: the comparison means something.


def test_evaluate_scores_an_export_like_the_checkpoint(tiny_run, version_dir, tmp_path):
    from_checkpoint = evaluate.evaluate_run(tiny_run)
    from_export = evaluate.evaluate_run(tiny_run, saved_model=version_dir)
    # The transfer figures need another domain's decoder on these images: a
    # checkpoint analysis, not something the export's signatures serve.
    for figures in from_checkpoint.values():
        assert figures.pop("transfer")
    assert from_export == from_checkpoint
    with pytest.raises(ConfigError, match="not an export"):
        evaluate.evaluate_run(tiny_run, saved_model=tmp_path)


def test_export_without_the_domain_scale_would_differ(trained, images):
    """Guards the test above: at these scales, ignoring the scale changes the class ids."""
    model = trained.model
    for domain in DOMAINS:
        scaled = model.segment(images, domain)["class_ids"].numpy()
        unscaled = model.decode(model.encode(model.preprocessor(domain).normalize(images)), domain,
                                (32, 64))
        assert (scaled != np.argmax(unscaled.numpy(), -1)).mean() > 0.01, domain


# -- decompression bombs -----------------------------------------------------------------


BOMBS = testing.bombs()  # 6000x6000 declared: PNG, baseline JPEG, progressive JPEG.


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_bombs_are_refused_before_decoding(reloaded, tf1_session, images, kind):
    bomb = BOMBS[kind]
    assert len(bomb) < 200_000
    message = (r"image 1 is 6000x6000 \(height x width\) = 36000000 pixels, above the "
               rf"limit of {contract.MAX_IMAGE_PIXELS} pixels per image")
    batch = [_png(images[0]), bomb]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        reloaded.signatures["segment_synth_city"](images=tf.constant(batch))
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        reloaded.signatures["embed_synth_camvid"](images=tf.constant(batch))
    refused = _run_tf1(tf1_session, {"serving_default": np.array(batch, dtype=object)})
    assert "36000000 pixels, above" in refused["serving_default"].message


def test_request_pixel_limit_and_tensor_signatures(reloaded, images):
    # 2048x2048 is within the per-image limit; nine of them are not within the request's.
    with pytest.raises(tf.errors.InvalidArgumentError, match="9000000 pixels, above the limit"):
        reloaded.signatures["segment_synth_city_tensor"](images=tf.zeros([1, 3000, 3000, 3], tf.uint8))
    many = tf.constant([testing.zero_png(2048, 2048)] * 9)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"the request holds 37748736 pixels in 9 images, above the "
                             rf"limit of {contract.MAX_REQUEST_PIXELS} pixels per request"):
        reloaded.signatures["segment_synth_camvid"](images=many)
    tensors = tf.zeros([5, 2800, 2800, 3], tf.uint8)
    with pytest.raises(tf.errors.InvalidArgumentError, match="39200000 pixels in 5 images"):
        reloaded.signatures["segment_synth_camvid_tensor"](images=tensors)


@pytest.mark.parametrize("case", ["png_truncated", "jpeg_truncated", "png_declares_less"])
def test_truncated_and_lying_headers_fail_cleanly(reloaded, images, case):
    png = _png(images[0])
    jpeg = tf.io.encode_jpeg(images[0]).numpy()
    data = {"png_truncated": png[:20], "jpeg_truncated": jpeg[:30],
            "png_declares_less": testing.png_declaring(png, 8, 4)}[case]
    signature = reloaded.signatures["segment_synth_city"]
    if case == "png_declares_less":
        # The decoder sizes its output from the header: what was declared is what is decoded.
        try:
            outputs = signature(images=tf.constant([data]))
        except tf.errors.InvalidArgumentError:
            return
        assert outputs["class_ids"].shape == (1, 4, 8)
        return
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="truncated|Invalid JPEG|corrupt|Premature|header"):
        signature(images=tf.constant([data]))


_RSS_PROBE = textwrap.dedent("""
    import json, resource, sys, time
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    signature = loaded.signatures["segment_synth_city"]
    good = tf.constant([open(sys.argv[2], "rb").read()])
    signature(images=good)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    refused, seconds = 0, []
    for path in sys.argv[3:]:
        started = time.perf_counter()
        try:
            signature(images=tf.constant([open(path, "rb").read()]))
        except tf.errors.InvalidArgumentError:
            refused += 1
        seconds.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kb": after - before, "refused": refused, "seconds": seconds}))
""")


def test_bombs_allocate_nothing_large(version_dir, images, tmp_path):
    """Peak RSS of a fresh process barely moves while it refuses six 6000x6000 bombs
    (decoding one would allocate 108 MB for its pixels alone)."""
    (tmp_path / "good.png").write_bytes(_png(images[0]))
    paths = []
    for i, (kind, bomb) in enumerate(sorted(BOMBS.items()) * 2):
        path = tmp_path / f"bomb{i}.{kind}"
        path.write_bytes(bomb)
        paths.append(str(path))
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(version_dir), str(tmp_path / "good.png"), *paths],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["refused"] == 6
    assert report["growth_kb"] < 50 * 1024, report


# -- warm-up -----------------------------------------------------------------------------


def test_warmup_requests_run_through_every_signature(version_dir, reloaded):
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    logs = [
        prediction_log_pb2.PredictionLog.FromString(record.numpy())
        for record in tf.data.TFRecordDataset(str(path))
    ]
    names = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert sorted(names) == sorted(SIGNATURES)
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "usss"
        assert list(request.inputs) == ["images"]
        signature = request.model_spec.signature_name
        batch = tf.constant(tf.make_ndarray(request.inputs["images"]))
        outputs = reloaded.signatures[signature](images=batch)
        key = "embeddings" if signature.startswith("embed") else "class_ids"
        expected = {"embed": (1, 4, 8), "embed_synth_city": (1, 4, 8),  # 64x128 at 0.5, stride 8
                    "embed_synth_camvid": (1, 6, 12)}.get(signature, (1, 64, 128))
        assert tuple(outputs[key].shape[:3]) == expected, signature


# -- command line ------------------------------------------------------------------------


def _invoke(*args):
    return CliRunner().invoke(main, ["export", *(str(a) for a in args)])


def test_cli_exports_the_next_version(tiny_run, tmp_path):
    base = tmp_path / "models"
    (base / "4").mkdir(parents=True)
    result = _invoke(tiny_run, "--model-base", base)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(base / "5")
    assert (base / "5" / "saved_model.pb").is_file()
    assert sorted(p.name for p in base.iterdir()) == ["4", "5"]


@pytest.mark.parametrize("case", ["not_a_run", "existing_version"])
def test_cli_errors_are_one_line(tiny_run, tmp_path, case):
    base = tmp_path / "models"
    (base / "3").mkdir(parents=True)
    if case == "not_a_run":
        result, fragment = _invoke(tmp_path, "--model-base", base), "not a run directory"
    else:
        result = _invoke(tiny_run, "--model-base", base, "--version", 3)
        fragment = f"{base / '3'} already exists"
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    assert fragment in message
