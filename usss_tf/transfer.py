"""Cross-label-space transfer: how well a model labels domain A's images in domain B's classes.

What the cross-domain entropy is for: aligning the domains so that one
domain's classes describe another's pixels. For a pair of domains whose
classes correspond (a ``Correspondence``: the synthetic domains by
construction, Cityscapes <-> CamVid and Cityscapes <-> IDD by the tables
below), domain A's validation images are labelled in B's label space three ways:

* ``decoder``: B's decoder on A's encoder features (A's scale): every model
  with both decoders has it (``univ_basic``, ``finetune``, ``univ_*``);
* ``embedding``: the nearest of B's label centroids to each pixel's embedding
  (runs that fit centroids: ``univ_full``, ``univ_paper``);
* ``decoder_colour_matched``: B's decoder on A's images with each image's
  channel means and stds moved to those of B's labelled training images
  (``usss_tf.data.colour_transfer``; where the caller has them). ``decoder``
  mixes two things: whether the shared features carry A's content into B's
  classes, and how far A's colours are from anything B's decoder was trained
  on. A model that learns the other domain's labels in its own colours
  (``univ_full``'s cross-domain supervision) is far above ``univ_basic`` on
  this one in every seed, while ``decoder`` cannot tell them apart
  (docs/RESULTS.md, "Transfer in the target's colours").

All are scored against A's labels mapped into the shared concepts of the
table (a concept is a set of A classes and a set of B classes: CamVid's ``car``
covers Cityscapes' car, truck, bus and train). A's pixels of classes without a
counterpart are ignored; a prediction of a B class without a counterpart is an
error for the true concept. The figures are the usual mIoU, per-concept IoU
and pixel accuracy over the concepts.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from usss_tf import inference
from usss_tf import metrics as metrics_lib
from usss_tf.data import colour_transfer
from usss_tf.domains import IGNORE_LABEL, get_domain

__all__ = ["Correspondence", "CORRESPONDENCES", "READ_ERRORS", "TransferPredictor", "colour_matched",
           "colour_reference", "concept_confusion", "correspondence", "corresponding_targets",
           "evaluate_transfer", "label_sets"]


@dataclasses.dataclass(frozen=True)
class Correspondence:
    """Concepts shared by two label spaces.

    Attributes:
      source, target: domain names.
      concepts: ``((name, source class names, target class names), ...)``.
    """

    source: str
    target: str
    concepts: tuple

    def __post_init__(self):
        for side, domain_name in ((1, self.source), (2, self.target)):
            known = set(get_domain(domain_name).class_names)
            seen = set()
            for concept in self.concepts:
                for class_name in concept[side]:
                    if class_name not in known:
                        raise ValueError(f"correspondence {self.source}<->{self.target}: "
                                         f"{domain_name} has no class {class_name!r}")
                    if class_name in seen:
                        raise ValueError(f"correspondence {self.source}<->{self.target}: "
                                         f"{domain_name} class {class_name!r} is in two concepts")
                    seen.add(class_name)

    @property
    def concept_names(self):
        return [name for name, _, _ in self.concepts]

    def reversed(self):
        return Correspondence(self.target, self.source,
                              tuple((name, b, a) for name, a, b in self.concepts))

    def _table(self, domain_name, side, unmatched):
        """``int64[num_classes]``: train id of ``domain_name`` -> concept id (``unmatched`` if none)."""
        names = get_domain(domain_name).class_names
        table = np.full(len(names), unmatched, np.int64)
        for concept_id, concept in enumerate(self.concepts):
            for class_name in concept[side]:
                table[names.index(class_name)] = concept_id
        return table

    def label_sets(self):
        """float32 ``[source classes + 1, target classes]``: row y is 1 for the target
        classes of source class y's concept; rows of classes without a counterpart,
        and the last row (ignore), are 0 (``losses.partial_label_cross_entropy_sum``)."""
        source, target = self._table(self.source, 1, -1), self._table(self.target, 2, -2)
        sets = (source[:, None] == target[None, :]).astype(np.float32)
        return np.concatenate([sets, np.zeros((1, len(target)), np.float32)])

    def source_to_concept(self, labels):
        """Source train ids -> concept ids; no counterpart and ignore -> ``IGNORE_LABEL``."""
        table = np.append(self._table(self.source, 1, IGNORE_LABEL), IGNORE_LABEL)
        labels = np.asarray(labels, np.int64)
        return table[np.where(labels < len(table) - 1, labels, len(table) - 1)]

    def target_to_concept(self, predictions):
        """Target train ids -> concept ids; a class without counterpart -> ``len(concepts)``."""
        return self._table(self.target, 2, len(self.concepts))[np.asarray(predictions, np.int64)]


def _same(*names):
    return tuple((name, (name,), (name,)) for name in names)


CORRESPONDENCES = (
    # synth_camvid merges car and truck into vehicle and has no fence or pole
    # (usss_tf.domains); synth_idd calls the trucks "large vehicle".
    Correspondence("synth_city", "synth_camvid", _same("road", "building", "sky") + (
        ("sidewalk", ("sidewalk",), ("pavement",)),
        ("vegetation", ("vegetation",), ("tree",)),
        ("person", ("person",), ("pedestrian",)),
        ("vehicle", ("car", "truck"), ("vehicle",)),
    )),
    Correspondence("synth_city", "synth_idd", _same(
        "road", "sidewalk", "building", "vegetation", "sky", "person", "car") + (
        ("truck", ("truck",), ("large vehicle",)),
    )),
    Correspondence("synth_camvid", "synth_idd", _same("road", "building", "sky") + (
        ("sidewalk", ("pavement",), ("sidewalk",)),
        ("vegetation", ("tree",), ("vegetation",)),
        ("person", ("pedestrian",), ("person",)),
        ("vehicle", ("vehicle",), ("car", "large vehicle")),
    )),
    # SegNet's 11 CamVid classes: "car" groups cars, SUVs, trucks, buses and
    # trains; "bicyclist" is rider and bicycle; "sign symbol" signs and lights.
    Correspondence("cityscapes", "camvid", _same("road", "building", "pole", "fence", "sky") + (
        ("sidewalk", ("sidewalk",), ("pavement",)),
        ("vegetation", ("vegetation",), ("tree",)),
        ("sign", ("traffic sign", "traffic light"), ("sign symbol",)),
        ("person", ("person",), ("pedestrian",)),
        ("bicyclist", ("rider", "bicycle"), ("bicyclist",)),
        ("car", ("car", "truck", "bus", "train"), ("car",)),
    )),
    # IDD level 3 shares Cityscapes' names for 17 classes; Cityscapes' terrain
    # and train have no single IDD counterpart and are left out.
    Correspondence("cityscapes", "idd", _same(
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
        "vegetation", "sky", "person", "rider", "car", "truck", "bus", "motorcycle", "bicycle")),
)


def label_sets(domain_names):
    """``{(source, target): Correspondence.label_sets()}`` for every ordered pair of
    ``domain_names`` whose classes correspond (the ``cross_domain_supervision`` term)."""
    pairs = {}
    for source in domain_names:
        for target in domain_names:
            found = correspondence(source, target) if source != target else None
            if found is not None:
                pairs[(source, target)] = found.label_sets()
    return pairs


def correspondence(source, target):
    """The ``Correspondence`` from ``source`` to ``target`` (either direction of the table), or None."""
    for item in CORRESPONDENCES:
        if (item.source, item.target) == (source, target):
            return item
        if (item.target, item.source) == (source, target):
            return item.reversed()
    return None


_IMAGES = tf.TensorSpec([None, None, None, 3], tf.uint8)
_SIZE = tf.TensorSpec([2], tf.int32)


class TransferPredictor:
    """Domain ``target``'s class ids for images of domain ``source`` (seen at the source's scale).

    One traced pass encodes the images once and returns ``{"decoder": ids}``
    (the target's decoder on those features) and, ``with_embedding``,
    ``"embedding"`` (the nearest target label centroid) from the same features.
    With ``reference_moments`` (the target's labelled images' channel
    ``(mean, std)``), ``"decoder_colour_matched"`` too: the target's decoder
    on the images moved to those moments, each from its own.
    """

    def __init__(self, model, source, target, with_embedding=False, reference_moments=None):
        self.model, self.source, self.target = model, source, target
        self.with_embedding = with_embedding
        self.reference_moments = reference_moments
        self.ways = (("decoder",) + (("embedding",) if with_embedding else ())
                     + (("decoder_colour_matched",) if reference_moments is not None else ()))
        self._predict = tf.function(self._class_ids, input_signature=[_IMAGES, _SIZE], autograph=False)

    def _decoder_ids(self, features, size):
        return tf.cast(tf.argmax(self.model.decode(features, self.target, size), axis=-1), tf.uint8)

    def _class_ids(self, images, size):
        features = self.model.features(images, self.source)
        out = {"decoder": self._decoder_ids(features, size)}
        if self.with_embedding:
            nearest = self.model.nearest_classes(images, self.source, size, features=features)
            out["embedding"] = nearest[f"nearest_class_{self.target}"]
        if self.reference_moments is not None:
            out["decoder_colour_matched"] = self._decoder_ids(
                self.model.features(colour_matched(images, self.reference_moments), self.source), size)
        return out

    def class_ids(self, images, size):
        """``{way: uint8 [B, H, W]}`` for uint8 images [B, h, w, 3] at ``size``."""
        out = self._predict(tf.convert_to_tensor(images, tf.uint8), tf.constant(size, tf.int32))
        return {way: ids.numpy() for way, ids in out.items()}


# What reading a domain's labelled images again can raise (a missing or broken file).
READ_ERRORS = (ValueError, OSError, tf.errors.OpError)


def corresponding_targets(sources, domains):
    """The names in ``domains`` whose classes correspond to one of ``sources`` (another
    domain): the targets that get transfer figures, and so need a colour reference."""
    return {target for target in domains
            if any(source != target and correspondence(source, target) is not None for source in sources)}


def colour_reference(domain, labelled_examples):
    """(mean, std) per channel over the known pixels of ``domain``'s ``labelled_examples``
    (its labelled training images): the colours of ``decoder_colour_matched``."""
    loaded = inference.load_examples(labelled_examples, domain.lookup_table())
    return colour_transfer.labelled_set_moments((image, label) for _, image, label in loaded)


def colour_matched(images, reference_moments):
    """uint8 ``images`` [B, H, W, 3], each moved from its own channel moments to
    ``reference_moments`` (``colour_transfer.match_colours``), rounded."""
    moved = colour_transfer.match_colours(tf.cast(images, tf.float64),
                                          colour_transfer.image_moments(images), reference_moments)
    return tf.cast(tf.round(moved), tf.uint8)


def evaluate_transfer(model, source_domain, examples, batch_size=4, with_embedding=False,
                      targets=None, reference_moments=None):
    """Transfer figures of ``source_domain``'s ``examples`` into every corresponding domain.

    Args:
      model: a ``UniversalSegmenter`` with the source's and the targets' decoders.
      source_domain: the ``Domain`` the images come from.
      examples: its labelled examples (e.g. the validation split).
      with_embedding: score the embedding branch too (the model has fitted centroids).
      targets: the target domains to consider (default: every other domain of the model).
      reference_moments: ``{target: (mean, std)}``, the channel moments of a
        target's labelled training images (``colour_reference``):
        score ``decoder_colour_matched`` for the targets it has.
    Returns:
      ``{target: {"decoder": figures, "embedding": figures, "decoder_colour_matched":
      figures}}`` for each target with a correspondence (``embedding`` only
      ``with_embedding``, the last only with the target's moments); figures
      are ``miou``, ``per_class_iou`` (per concept), ``pixel_accuracy``.
    """
    reference_moments = reference_moments or {}
    pairs = {}
    for target in targets or [d for d in model.domains if d != source_domain.name]:
        table = correspondence(source_domain.name, target)
        if table is not None and target in model.domains:
            pairs[target] = (table, TransferPredictor(model, source_domain.name, target, with_embedding,
                                                      reference_moments.get(target)))
    if not pairs:
        return {}
    confusion = {target: {way: 0 for way in predictor.ways} for target, (_, predictor) in pairs.items()}
    loaded = inference.load_examples(examples, source_domain.lookup_table())
    for batch in inference.same_size_batches(loaded, batch_size):
        images, labels = inference.stack(batch)
        for target, (table, predictor) in pairs.items():
            for way, ids in predictor.class_ids(images, labels.shape[1:3]).items():
                confusion[target][way] += concept_confusion(table, labels, ids)
    return {target: {way: metrics_lib.summarize(matrix, pairs[target][0].concept_names)
                     for way, matrix in ways.items()}
            for target, ways in confusion.items()}


def concept_confusion(table, labels, predictions):
    """Confusion matrix over ``table``'s concepts (+ a last column: a target class without
    counterpart) of source train-id ``labels`` and target train-id ``predictions``."""
    size = len(table.concepts) + 1
    return metrics_lib.confusion_matrix(
        table.source_to_concept(labels), table.target_to_concept(predictions), size)
