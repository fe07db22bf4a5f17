"""tf.data input pipelines: labelled subset, unlabelled stream, validation.

Training batches are a pure function of ``(seed, step)``: sample ``i`` of a
stream is image ``perm_epoch[i % n]`` with ``perm_epoch`` a seeded permutation
per pass, and every augmentation draws from stateless RNG keyed by ``i``. So
the same seed gives the same batches however many parallel calls decode them,
and a resumed run continues exactly where its checkpoint left off without
replaying the pipeline.
"""

import dataclasses
import functools
import json
import pathlib
import zlib

import numpy as np
import tensorflow as tf

from usss_tf import losses
from usss_tf.data import class_hue as class_hue_lib
from usss_tf.data import copy_paste as copy_paste_lib
from usss_tf.data import strong_views
from usss_tf.data.masking import patch_mask
from usss_tf.domains import IGNORE_LABEL
from usss_tf.errors import ConfigError, DatasetError
from usss_tf.model.preprocessing import scaled_size
from usss_tf.run_dir import write_json_atomic

AUTOTUNE = tf.data.AUTOTUNE
LABELED_STREAM, UNLABELED_STREAM, MASKED_STREAM = 1, 2, 3


# -- the labelled subset ------------------------------------------------------------


def domain_seed(seed, domain_name):
    """A per-domain integer seed, stable across Python processes (no ``hash``)."""
    return (int(seed) * 1_000_003 + zlib.crc32(domain_name.encode())) % (2**31 - 1)


def split_labeled(examples, num_labeled, seed, domain_name, num_unlabeled=None):
    """Seeded draw of ``num_labeled`` examples; the rest form the unlabelled pool.

    Examples are first sorted by key so the draw never depends on the order
    the file system lists files in. When every image is labelled, the
    unlabelled pool is the whole split (the entropy terms still need pixels).
    """
    examples = sorted(examples, key=lambda e: e.key)
    if num_labeled > len(examples):
        raise ConfigError(
            f"domain '{domain_name}': asked for {num_labeled} labelled images but the "
            f"training split has only {len(examples)}"
        )
    rng = np.random.default_rng(domain_seed(seed, domain_name))
    chosen = set(rng.choice(len(examples), size=num_labeled, replace=False).tolist())
    labeled = [e for i, e in enumerate(examples) if i in chosen]
    unlabeled = [e for i, e in enumerate(examples) if i not in chosen] or list(examples)
    if num_unlabeled is not None:
        unlabeled = unlabeled[:num_unlabeled] if num_unlabeled else []
    return labeled, unlabeled


# Manifest fields that runs of older versions do not have (the splits' fingerprints).
_FIELDS_ADDED_LATER = frozenset({"splits"})


def write_manifest(path, entries):
    """Writes the labelled-subset manifest, or checks it matches an existing one.

    ``entries`` maps domain -> {"root", "labeled": [keys], "unlabeled": count,
    "splits": fingerprints, ...}. A different manifest in the same run
    directory means the data or the seed changed under a run being resumed:
    that is an error, not a silent change of the experiment. A field added to
    the manifest since (``_FIELDS_ADDED_LATER``) is not compared when the
    existing manifest, written by an older version, lacks it.
    """
    path = pathlib.Path(path)
    if path.exists():
        existing = json.loads(path.read_text())
        entries = {
            domain: {k: v for k, v in entry.items()
                     if k not in _FIELDS_ADDED_LATER or k in existing.get(domain, entry)}
            for domain, entry in entries.items()
        }
        if existing != entries:
            changed = []
            for domain in sorted(set(existing) | set(entries)):
                before, now = existing.get(domain), entries.get(domain)
                if before != now:
                    fields = sorted(k for k in set(before or {}) | set(now or {})
                                    if (before or {}).get(k) != (now or {}).get(k))
                    changed.append(f"{domain} ({', '.join(fields)})"
                                   if before and now else domain)
            raise DatasetError(
                f"{path}: the data or labelled subset differs from the one this run started "
                f"with (domains: {'; '.join(changed)}); the data or seed changed, use a new "
                "run directory"
            )
        return
    write_json_atomic(path, entries)


# -- decoding -----------------------------------------------------------------------


def decode_image(path):
    """uint8 [H, W, 3] from a PNG or JPEG file."""
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_label(path, lookup_table):
    """Train ids uint8 [H, W] from a raw-id PNG through the domain's 256-entry table."""
    raw = tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=tf.uint8)[..., 0]
    return tf.gather(tf.constant(lookup_table, tf.uint8), tf.cast(raw, tf.int32))


def _resize_pair(image, label, size):
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    return image, label


# -- augmentation -------------------------------------------------------------------


def augment(image, label, seed, crop, domain_scale, augment_config):
    """Joint image+mask augmentation with stateless RNG.

    Random scale (times the domain's scale) -> pad to the crop with ignore ->
    random crop -> horizontal flip -> photometric jitter (image only).

    Args:
      image: uint8/float [H, W, 3]; label: uint8 [H, W] or None.
      seed: int32 [2] stateless seed.
    Returns:
      float32 [crop_h, crop_w, 3] in 0..255 and uint8 [crop_h, crop_w] (or None).
    """
    seeds = tf.random.experimental.stateless_split(seed, num=8)
    a = augment_config
    scale = tf.random.stateless_uniform([], seeds[0], a.min_scale, a.max_scale) * domain_scale
    size = scaled_size(tf.shape(image)[:2], scale)
    has_label = label is not None
    if not has_label:
        label = tf.zeros(tf.shape(image)[:2], tf.uint8)
    image, label = _resize_pair(image, label, size)

    crop_h, crop_w = crop
    pad_h = tf.maximum(crop_h - size[0], 0)
    pad_w = tf.maximum(crop_w - size[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    image = tf.pad(image, paddings + [[0, 0]])
    label = tf.pad(label, paddings, constant_values=IGNORE_LABEL)

    stacked = tf.concat([image, tf.cast(label[..., None], tf.float32)], axis=-1)
    stacked = tf.image.stateless_random_crop(stacked, [crop_h, crop_w, 4], seeds[1])
    if a.flip:
        stacked = tf.image.stateless_random_flip_left_right(stacked, seeds[2])
    image = stacked[..., :3]
    label = tf.cast(stacked[..., 3], tf.uint8)

    if a.photometric:
        x = image / 255.0
        x = tf.image.stateless_random_brightness(x, 0.15, seeds[3])
        x = tf.image.stateless_random_contrast(x, 0.8, 1.2, seeds[4])
        x = tf.image.stateless_random_saturation(x, 0.8, 1.2, seeds[5])
        x = tf.image.stateless_random_hue(x, 0.03, seeds[6])
        image = tf.clip_by_value(x, 0.0, 1.0) * 255.0
    image.set_shape([crop_h, crop_w, 3])
    label.set_shape([crop_h, crop_w])
    return image, (label if has_label else None)


# -- training streams ---------------------------------------------------------------


def _sample_index(i, n, seed):
    """Index of sample ``i`` in a stream over ``n`` items reshuffled every pass."""
    epoch = i // n
    noise = tf.random.stateless_uniform([n], tf.stack([tf.cast(seed, tf.int64), epoch]))
    permutation = tf.argsort(noise)
    return tf.gather(permutation, tf.cast(i % n, tf.int32))


def _stream(images, labels, batch_size, start_step, num_steps, seed, crop, scale, augment_config, table,
            consistency=None, strong_view=True, hue_free=None):
    """A batched stream of augmented crops for steps ``[start_step, start_step + num_steps)``.

    Labelled: ``(images, labels)``. Unlabelled: ``images``, or with
    ``consistency`` (a ``ConsistencyConfig``) a dict of the weak view
    (``unlabeled``), the valid-pixel mask (0 where the crop is padding), the
    sample's seed and, with ``strong_view``, its strong view and CutMix box
    (``strong_views``).
    """
    n = len(images)
    image_paths = tf.constant(images)
    label_paths = tf.constant(labels) if labels is not None else None

    def load(i):
        index = _sample_index(i, n, seed)
        image = decode_image(tf.gather(image_paths, index))
        element_seed = tf.stack([tf.cast(seed, tf.int64) + 7919, i])
        if label_paths is not None:
            label = decode_label(tf.gather(label_paths, index), table)
            image, label = augment(image, label, element_seed, crop, scale, augment_config)
            if hue_free is not None:
                image = class_hue_lib.turn_class_hues(
                    image, label, hue_free, augment_config.class_hue_probability,
                    tf.stack([tf.cast(seed, tf.int64) + 3571, i]))
            return image, tf.cast(label, tf.int32)
        if consistency is None:
            return augment(image, None, element_seed, crop, scale, augment_config)[0]
        # A blank label marks the padding of crops larger than the image.
        blank = tf.zeros(tf.shape(image)[:2], tf.uint8)
        image, padding = augment(image, blank, element_seed, crop, scale, augment_config)
        view_seed = tf.stack([tf.cast(seed, tf.int64) + 104729, i])
        box_seed = tf.stack([tf.cast(seed, tf.int64) + 1299709, i])
        views = {
            "unlabeled": image,
            "unlabeled_valid": tf.cast(tf.not_equal(padding, IGNORE_LABEL), tf.float32),
            "unlabeled_seed": view_seed,
        }
        if strong_view:
            views["unlabeled_strong"] = strong_views.strong_photometric(image, view_seed, consistency)
            views["cutmix_box"] = strong_views.cutmix_box(crop, box_seed, consistency.cutmix)
        return views

    first = start_step * batch_size
    last = (start_step + num_steps) * batch_size
    ds = tf.data.Dataset.range(first, last)
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True)


def _training_steps(ds):
    """A training stage's dataset as the trainer takes it: deterministic, sharded by data
    across workers, prefetched."""
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(AUTOTUNE)


def train_dataset(domain_inputs, data_config, seed, start_step, num_steps, with_unlabeled=True,
                  consistency=None, strong_view=True, copy_paste=False, masked=None, hue_free=None):
    """One element per step: ``{domain: {"images", "labels"[, "unlabeled", ...]}}``.

    Args:
      domain_inputs: list of ``DomainInputs`` (one per domain, config order).
      data_config: ``DataConfig`` (crop, batch sizes, augmentation).
      seed: experiment seed.
      start_step, num_steps: the steps this dataset covers.
      with_unlabeled: add the unlabelled stream (entropy and consistency terms).
      consistency: a ``ConsistencyConfig`` to add what the consistency terms
        need to the unlabelled stream (``_stream``); None: weak views only.
      strong_view: with ``consistency``, the strong views and CutMix boxes too.
      copy_paste: with the unlabelled stream, its crops with the labelled
        crops' small-class pixels pasted in (``usss_tf.data.copy_paste``), built on
        the global batch: ``"unlabeled_pasted"`` and ``"pasted_labels"``
        (``IGNORE_LABEL`` where nothing is pasted).
      masked: a ``MaskedModellingConfig`` to give each unlabelled crop its
        patch mask (``"unlabeled_mask"``, the ``masked_auxiliary`` term).
      hue_free: with ``data.augment.class_hue``, {domain: bool [C]} of the classes
        whose labelled pixels turn hue (``labelled_hue_free_classes``); a domain
        not in it has them worked out here.
    """
    per_domain = {}
    crop = tuple(data_config.crop)
    for inputs in domain_inputs:
        base = domain_seed(seed, inputs.domain.name)
        table = inputs.domain.lookup_table()
        domain_hue_free = None
        if data_config.augment.class_hue:
            given = (hue_free or {}).get(inputs.domain.name)
            if given is None:
                given = labelled_hue_free_classes(inputs, data_config.augment.class_hue_max_concentration)
            if len(given) != inputs.domain.num_classes:
                raise ValueError(f"hue_free['{inputs.domain.name}']: {len(given)} entries for "
                                 f"{inputs.domain.num_classes} classes")
            domain_hue_free = tf.constant(given, tf.bool)
        labeled = _stream(
            [e.image for e in inputs.labeled], [e.label for e in inputs.labeled],
            data_config.batch_size, start_step, num_steps, base * 4 + LABELED_STREAM, crop,
            inputs.scale, data_config.augment, table, hue_free=domain_hue_free,
        )
        labeled = labeled.map(lambda x, y: {"images": x, "labels": y})
        if data_config.augment.copy_paste:
            labeled = labeled.map(functools.partial(_paste_labelled, num_classes=inputs.domain.num_classes))
        if (consistency is not None and consistency.distribution_alignment
                and consistency.alignment_target == "labelled_set"):
            prior = labelled_class_frequency([e.label for e in inputs.labeled], table,
                                             inputs.domain.num_classes)
            rows = tf.tile(prior[None], [data_config.batch_size, 1])  # split with the batch
            labeled = labeled.map(lambda batch, rows=rows: {**batch, "labelled_prior": rows})
        if with_unlabeled and inputs.unlabeled and data_config.unlabeled_batch_size:
            unlabeled = _stream(
                [e.image for e in inputs.unlabeled], None, data_config.unlabeled_batch_size,
                start_step, num_steps, base * 4 + UNLABELED_STREAM, crop, inputs.scale,
                data_config.augment, table, consistency=consistency, strong_view=strong_view,
            )
            if consistency is None:
                unlabeled = unlabeled.map(lambda u: {"unlabeled": u})
            if masked is not None:
                masks = _patch_masks(base * 4 + UNLABELED_STREAM, crop, masked, start_step, num_steps,
                                     data_config.unlabeled_batch_size)
                unlabeled = tf.data.Dataset.zip(unlabeled, masks).map(lambda u, m: {**u, "unlabeled_mask": m})
            labeled = tf.data.Dataset.zip(labeled, unlabeled).map(lambda l, u: {**l, **u})
            if copy_paste:
                labeled = labeled.map(functools.partial(_add_pasted, num_classes=inputs.domain.num_classes))
        per_domain[inputs.domain.name] = labeled
    ds = tf.data.Dataset.zip(per_domain)
    return _training_steps(ds)


def masked_dataset(domain_inputs, data_config, masked_config, seed, start_step, num_steps):
    """The masked stage's steps: ``{domain: {"images", "image_mask"}}`` per step.

    Each domain's crops are drawn uniformly from all its training images,
    labelled or not (labels are never read), ``batch_size +
    unlabeled_batch_size`` per step (the universal stage's images per step),
    augmented as training crops are or flipped only (``masked_config.augment``);
    each has its patch mask
    (``masking.patch_mask`` with ``masked_config``, a ``MaskedModellingConfig``),
    drawn from a seed of its own per crop: a function of (seed, step) like
    every batch.
    """
    per_domain = {}
    crop = tuple(data_config.crop)
    batch_size = data_config.batch_size + data_config.unlabeled_batch_size
    augment_config = data_config.augment
    if masked_config.augment == "flips":
        augment_config = dataclasses.replace(augment_config, min_scale=1.0, max_scale=1.0, photometric=False)
    for inputs in domain_inputs:
        stream_seed = domain_seed(seed, inputs.domain.name) * 4 + MASKED_STREAM
        images = [e.image for e in inputs.labeled + inputs.unlabeled]
        crops = _stream(images, None, batch_size, start_step, num_steps, stream_seed, crop, inputs.scale,
                        augment_config, inputs.domain.lookup_table())
        masks = _patch_masks(stream_seed, crop, masked_config, start_step, num_steps, batch_size)
        per_domain[inputs.domain.name] = tf.data.Dataset.zip(crops, masks).map(
            lambda x, m: {"images": x, "image_mask": m})
    ds = tf.data.Dataset.zip(per_domain)
    return _training_steps(ds)


def _patch_masks(stream_seed, crop, masked_config, start_step, num_steps, batch_size):
    """Batches of patch masks (``masking.patch_mask``) for the crops of a stream:
    one per crop, from a seed of its own, a function of (stream seed, step)."""
    first, last = start_step * batch_size, (start_step + num_steps) * batch_size
    return tf.data.Dataset.range(first, last).map(
        lambda i: patch_mask(crop, masked_config.patch, masked_config.mask_ratio,
                             tf.stack([tf.cast(stream_seed, tf.int64) + 15485863, i])),
        num_parallel_calls=AUTOTUNE, deterministic=True).batch(batch_size, drop_remainder=True)


def labelled_hue_free_classes(inputs, max_concentration):
    """bool [C]: ``class_hue.hue_free_classes`` of a domain's labelled images as stored
    (``inputs``: its ``DomainInputs``), at their own resolution, before any augmentation."""
    table = inputs.domain.lookup_table()
    images = (decode_image(e.image).numpy() for e in inputs.labeled)
    labels = (decode_label(e.label, table).numpy() for e in inputs.labeled)
    return class_hue_lib.hue_free_classes(images, labels, inputs.domain.num_classes, max_concentration)


def labelled_class_frequency(label_paths, lookup_table, num_classes):
    """float32 [C]: each class's share of the known pixels of the label files, as stored."""
    counts = tf.zeros([num_classes], tf.float32)
    for path in label_paths:
        labels = tf.cast(decode_label(path, lookup_table), tf.int32)
        counts += losses.labelled_class_counts(labels, num_classes)
    return counts / tf.maximum(tf.reduce_sum(counts), 1.0)


def _paste_labelled(batch, num_classes):
    """``batch`` with copy-paste between its labelled crops (``data.augment.copy_paste``)."""
    images, labels = copy_paste_lib.paste_within_labelled(batch["images"], batch["labels"], num_classes)
    return {**batch, "images": images, "labels": tf.cast(labels, batch["labels"].dtype)}


def _add_pasted(batch, num_classes):
    """``batch`` with its copy-paste view (``usss_tf.data.copy_paste``)."""
    pasted, _, labels = copy_paste_lib.paste_small_classes(
        batch["images"], batch["labels"], batch["unlabeled"], num_classes)
    return {**batch, "unlabeled_pasted": pasted, "pasted_labels": labels}


# -- evaluation ---------------------------------------------------------------------


def eval_dataset(domain, examples, batch_size):
    """Batches ``{domain: {"images", "labels"}}`` of labelled images as stored.

    Images are uint8 at their own resolution: the model's inference path
    applies the domain's scale. Batches are padded (pixels padded in the label
    are ignored), which suits pooling labelled pixels (the centroid stage);
    figures per image come from ``usss_tf.evaluate``, which never pads.
    """
    table = domain.lookup_table()
    images = tf.constant([e.image for e in examples])
    labels = tf.constant([e.label for e in examples])

    def load(image_path, label_path):
        return decode_image(image_path), tf.cast(decode_label(label_path, table), tf.int32)

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.padded_batch(batch_size, padding_values=(tf.constant(0, tf.uint8), IGNORE_LABEL))
    ds = ds.map(lambda x, y: {domain.name: {"images": x, "labels": y}})
    return ds.prefetch(AUTOTUNE)
