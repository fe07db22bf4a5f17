"""The method in one place: the stages each approach runs, and the loss it optimises.

Five approaches are compared (``config.method``):

* ``univ_full``: masked (masked image modelling on every training image of
  every domain, labels unused) -> pretrain (supervised, all domains) ->
  centroids -> universal (every loss term of the config: the entropy module
  and weak-to-strong consistency on unlabelled images, off by default,
  ``config.METHOD_DEFAULTS``);
* ``univ_paper``: the paper's method: ``univ_full`` without the masked stage
  and consistency;
* ``univ_basic``: pretrain -> universal, supervised loss only (a shared encoder);
* ``finetune``: source (the first domain) -> target (the other domains),
  supervised loss only;
* ``supervised``: one independent model per domain, labelled data only; each
  is a one-domain ``univ_basic`` run of ``pretrain_steps + steps`` pre-training
  steps (``supervised_domain_config``) in ``supervised/<domain>/``.

A plan is data (``PLANS``): the trainer walks it and knows nothing of methods.
``Objective`` composes the loss terms of one stage on one batch; the model
only provides the architecture (``encode``, ``decode``, ``embed``,
``similarity_logits``, ``reconstruct``) and a generic ``train_step`` that
asks its objective.
"""

import dataclasses

import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf import losses
from usss_tf.data import colour_transfer, masking, strong_views
from usss_tf.domains import IGNORE_LABEL
from usss_tf.errors import ConfigError

METHODS = config_lib.METHODS  # The names; the config validates against them.

# Stage names: checkpoint folders and stages.json keys of a run directory.
MASKED, PRETRAIN, CENTROIDS, UNIVERSAL = "masked", "pretrain", "centroids", "universal"
SOURCE, TARGET = "source", "target"

LOSS_TERMS = ("supervised", "cross_domain_supervision", "within_entropy", "cross_entropy",
              "embedding_supervision", "consistency_strong", "consistency_feature",
              "consistency_paste", "masked_reconstruction", "masked_auxiliary")
# The terms of every training stage but the masked one; the others need all_losses.
SUPERVISED_TERMS = ("supervised", "cross_domain_supervision")
CONSISTENCY_TERMS = ("consistency_strong", "consistency_feature", "consistency_paste")
# The terms that train on unlabelled images (the masked stage's reconstruction
# learns from every training image, labelled ones too, so it is not one).
UNLABELED_TERMS = ("within_entropy", "cross_entropy") + CONSISTENCY_TERMS + ("masked_auxiliary",)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a plan.

    Attributes:
      name: the stage's name (its checkpoint folder).
      fits_centroids: the label-centroid stage (no optimizer steps) instead of training.
      domains: which domains it trains on: ``all``, ``first`` or ``rest``.
      steps_key: the ``train.*`` key that counts its steps.
      all_losses: every loss term of ``config.loss`` (else the supervised loss only).
      consistency: with ``all_losses``, the consistency terms and ``masked_auxiliary``
        too (else they are off).
      masked_modelling: masked image modelling instead of any segmentation loss:
        the encoder and the reconstruction head learn from every training image
        (labelled or not, labels unused); no validation (the decoders are untrained).
    """

    name: str
    fits_centroids: bool = False
    domains: str = "all"
    steps_key: str = "pretrain_steps"
    all_losses: bool = False
    consistency: bool = False
    masked_modelling: bool = False

    def steps(self, train_config):
        """Optimizer steps of this stage under ``train_config`` (0 for the centroid stage)."""
        return 0 if self.fits_centroids else getattr(train_config, self.steps_key)

    def select(self, domain_inputs):
        """The ``DomainInputs`` this stage trains on."""
        return {"all": domain_inputs, "first": domain_inputs[:1], "rest": domain_inputs[1:]}[self.domains]


PLANS = {
    "univ_full": (
        Stage(MASKED, steps_key="masked_steps", masked_modelling=True),
        Stage(PRETRAIN),
        Stage(CENTROIDS, fits_centroids=True),
        Stage(UNIVERSAL, steps_key="steps", all_losses=True, consistency=True),
    ),
    "univ_paper": (
        Stage(PRETRAIN),
        Stage(CENTROIDS, fits_centroids=True),
        Stage(UNIVERSAL, steps_key="steps", all_losses=True),
    ),
    "univ_basic": (Stage(PRETRAIN), Stage(UNIVERSAL, steps_key="steps")),
    "finetune": (Stage(SOURCE, domains="first"), Stage(TARGET, domains="rest", steps_key="steps")),
}


def plan(method):
    """The stages of ``method``, in order (``supervised`` runs are per-domain ``univ_basic`` runs)."""
    return PLANS[method]


def final_stages(method):
    """The stages whose checkpoint can hold a run's result, latest first (not the masked
    stage: its decoders are untrained)."""
    return tuple(s for s in reversed(PLANS.get(method, ())) if not s.masked_modelling)


def has_label_centroids(method):
    """Whether ``method`` fits label centroids (and so trains the embedding branch)."""
    return any(stage.fits_centroids for stage in PLANS.get(method, ()))


def trains_masked_modelling(config):
    """Whether a run of ``config`` has a ``masked`` stage with steps or the
    ``masked_auxiliary`` term (so its model a reconstruction head)."""
    return bool(trained_terms(config, ("masked_reconstruction", "masked_auxiliary")))


def trained_terms(config, terms):
    """``{term: weight}`` of those of ``terms`` that some stage of ``config``'s method
    trains (it has steps) with a weight above 0."""
    found = {}
    for stage in PLANS.get(config.method, ()):
        if stage.steps(config.train) > 0:
            weights = loss_weights(config.loss, stage)
            found.update({t: weights[t] for t in terms if weights.get(t, 0.0) > 0})
    return found


def unlabeled_terms(config):
    """The ``UNLABELED_TERMS`` a run of ``config`` trains, ``{term: weight}``
    (empty when unlabelled images go unused)."""
    return trained_terms(config, UNLABELED_TERMS)


def check_unlabeled_stream(config):
    """Raises ``ConfigError`` when ``config`` trains terms on unlabelled images but
    gives them none per step (``data.unlabeled_batch_size: 0``); returns ``unlabeled_terms``.

    Without it such a run trains silently without those terms.
    """
    terms = unlabeled_terms(config)
    if terms and config.data.unlabeled_batch_size == 0:
        named = ", ".join(f"loss.{t} ({w:g})" for t, w in terms.items())
        raise ConfigError(f"key 'data.unlabeled_batch_size' is 0, but {named} train on unlabelled "
                          "images: give them images per step or set those weights to 0")
    return terms


def supervised_domain_config(config, domain_config):
    """The config of one domain's model in a ``supervised`` run: labelled data only.

    A ``univ_basic`` run of that domain alone whose pre-training lasts
    ``pretrain_steps + steps`` (so every method trains for the same supervised steps;
    ``univ_full`` adds its masked stage's).
    """
    return dataclasses.replace(
        config,
        name=f"{config.name}-{domain_config.name}",
        method="univ_basic",
        domains=[domain_config],
        train=dataclasses.replace(
            config.train, pretrain_steps=config.train.pretrain_steps + config.train.steps, steps=0
        ),
    )


def loss_weights(loss_config, stage):
    """``{term: weight}`` of ``stage``: every term of ``loss_config`` (the consistency
    terms only where the stage has them), the supervised ones only
    (``SUPERVISED_TERMS``), or for the ``masked`` stage the reconstruction error only."""
    if stage.masked_modelling:
        return {"supervised": 0.0, "masked_reconstruction": 1.0}
    if not stage.all_losses:
        return {term: getattr(loss_config, term) for term in SUPERVISED_TERMS}
    weights = dataclasses.asdict(loss_config)
    if not stage.consistency:
        weights.update(dict.fromkeys(CONSISTENCY_TERMS + ("masked_auxiliary",), 0.0))
    return weights


class Objective:
    """The weighted loss terms of one stage, computed on one training batch.

    Args:
      weights: ``{term: weight}`` for terms of ``LOSS_TERMS``; missing terms
        are off, ``supervised`` defaults to 1.
      num_domains: the model's number of domains; with one there is no
        cross-domain term (its weight is set to 0).
      consistency: the ``ConsistencyConfig`` (threshold, feature dropout) of
        the consistency terms; needed when their weights are on.
      label_sets: ``{(source, target): float [source classes + 1, target classes]}``
        (``transfer.label_sets``), the classes of ``target`` each label of ``source``
        admits; ``cross_domain_supervision`` trains the pairs given, none without.
      cross_domain_colour: that term sees each source's labelled crops in the
        target's colours (``usss_tf.data.colour_transfer``; one more encoder
        pass of them per pair) instead of their own.

    The terms (p_d is the softmax over domain d's classes of the similarity
    between a pixel's embedding and d's label centroids):

    * supervised: masked cross-entropy of each decoder on its labelled pixels;
    * cross_domain_supervision: each decoder on the other domains' labelled
      pixels, whose labels name a set of its classes where the label spaces
      correspond (``losses.partial_label_cross_entropy_sum``; "vehicle" admits
      car and truck; labels without a counterpart do not count), their crops
      in the decoder's domain's colours with ``cross_domain_colour``;
    * within_entropy (beta): H(p_d) on unlabelled pixels of domain d;
    * cross_entropy (alpha): mean over d' != d of H(p_d') on the same pixels;
    * embedding_supervision: cross-entropy of p_d against the labels, which
      keeps the embedding from collapsing onto one centroid;
    * consistency_strong: cross-entropy of domain d's decoder on the strong
      CutMix view of its unlabelled images against the weak view's confident
      pseudo-labels (pasted with the box);
    * consistency_feature: the same on the weak view's encoder features with
      whole channels dropped (UniMatch's feature-perturbation stream);
    * consistency_paste: the same on the unlabelled crops with a labelled
      crop's small-class pixels pasted in (``usss_tf.data.copy_paste``), whose
      true labels are targets wherever pasted, whatever the threshold;
    * masked_reconstruction: the ``masked`` stage's only term, the squared
      error of the reconstruction head on the masked cells of every crop of
      the domain (``usss_tf.data.masking``);
    * masked_auxiliary: the same on the unlabelled crops (their cells in
      ``"unlabeled_mask"``), alongside the segmentation terms.
    """

    def __init__(self, weights=None, num_domains=None, consistency=None, label_sets=None,
                 cross_domain_colour=False):
        merged = dict.fromkeys(LOSS_TERMS, 0.0)
        merged["supervised"] = 1.0
        for key, value in (weights or {}).items():
            if key not in merged:
                raise ValueError(f"unknown loss term {key!r}; expected one of {LOSS_TERMS}")
            merged[key] = float(value)
        if num_domains is not None and num_domains < 2:
            merged["cross_entropy"] = 0.0
        others = [t for t in LOSS_TERMS if t != "masked_reconstruction" and merged[t] > 0]
        if merged["masked_reconstruction"] > 0 and others:
            raise ValueError(f"masked_reconstruction is a stage of its own; set {others} to 0 with it")
        self.weights = merged
        if self.uses_consistency and consistency is None:
            raise ValueError("consistency terms are on: pass the ConsistencyConfig (consistency=)")
        self.consistency = consistency
        self.label_sets = dict(label_sets or {})
        self.cross_domain_colour = cross_domain_colour

    @property
    def uses_consistency(self):
        return any(self.weights[t] > 0 for t in CONSISTENCY_TERMS)

    @property
    def uses_entropy(self):
        return self.weights["within_entropy"] > 0 or self.weights["cross_entropy"] > 0

    @property
    def uses_masking(self):
        return self.weights["masked_reconstruction"] > 0

    @property
    def uses_masked_auxiliary(self):
        return self.weights["masked_auxiliary"] > 0

    @property
    def uses_unlabeled(self):
        return self.uses_entropy or self.uses_consistency or self.uses_masking or self.uses_masked_auxiliary

    @property
    def uses_embedding(self):
        return self.uses_entropy or self.weights["embedding_supervision"] > 0

    def terms(self, model, batch, training=True):
        """Every weighted loss term for one batch, as a dict ``{term/domain: scalar}``.

        ``batch`` maps each domain to ``{"images", "labels"}`` (crops the
        pipeline already resized by the domain's scale) and, when terms on
        unlabelled images are on, ``"unlabeled"`` images of the same size (and
        for consistency their strong views, ``pipeline.train_dataset``). All
        images go through the encoder in one pass.
        """
        names = [d for d in model.domains if d in batch]
        if self.uses_masking:
            return self._masked_terms(model, batch, names, training)
        w = self.weights
        cross = w["cross_entropy"] > 0 and len(model.domains) > 1
        # What is left of the domain's preprocessing is normalisation: the
        # augmentation resized images and masks together.
        chunks, where, targets = [], {}, {}

        def add(key, images):
            where[key] = len(chunks)
            chunks.append(images)

        for d in names:
            normalize = model.preprocessor(d).normalize
            add((d, "labeled"), normalize(batch[d]["images"]))
            if "unlabeled" not in batch[d]:
                continue
            unlabeled_images = normalize(batch[d]["unlabeled"])
            if self.uses_entropy or self.uses_consistency:
                add((d, "weak"), unlabeled_images)
                if self.weights["consistency_strong"] > 0:
                    if "unlabeled_strong" not in batch[d]:
                        raise ValueError(f"domain {d!r}: consistency terms are on but the batch has no "
                                         "strong views (pipeline.train_dataset(consistency=...))")
                    strong = strong_views.paste_partner(batch[d]["unlabeled_strong"], batch[d]["cutmix_box"])
                    add((d, "strong"), normalize(strong))
                if self.weights["consistency_paste"] > 0:
                    if "unlabeled_pasted" not in batch[d]:
                        raise ValueError(f"domain {d!r}: consistency_paste is on but the batch has no "
                                         "copy-paste view (pipeline.train_dataset(copy_paste=True))")
                    add((d, "pasted"), normalize(batch[d]["unlabeled_pasted"]))
            if self.uses_masked_auxiliary:
                if "unlabeled_mask" not in batch[d]:
                    raise ValueError(f"domain {d!r}: masked_auxiliary is on but the batch has no "
                                     "'unlabeled_mask' (pipeline.train_dataset(masked=...))")
                # In the one encoder pass: BatchNorm's batch statistics include the blanked crops.
                add((d, "masked"), masking.blank(unlabeled_images, batch[d]["unlabeled_mask"]))
                targets[d] = unlabeled_images
        # The cross-domain term's view of each source's labelled crops: in the
        # target's colours (data.augment.cross_domain_colour), else as they are.
        cross_domain = {(s, d): (s, "labeled") for d in names for s in names
                        if (s, d) in self.label_sets} if w["cross_domain_supervision"] > 0 else {}
        if self.cross_domain_colour and cross_domain:
            moments = {d: colour_transfer.channel_moments(batch[d]["images"], batch[d]["labels"])
                       for d in sorted({d for pair in cross_domain for d in pair})}
            for s, d in cross_domain:
                add((s, f"as {d}"), model.preprocessor(d).normalize(
                    colour_transfer.match_colours(batch[s]["images"], moments[s], moments[d])))
                cross_domain[(s, d)] = (s, f"as {d}")
        sizes = [tf.shape(c)[0] for c in chunks]
        features = tf.split(model.encode(tf.concat(chunks, 0), training=training), sizes, 0)
        # Embeddings of the labelled images (embedding supervision) and, for the
        # entropy terms, of the weak views; strong views never need them.
        embedded = [i for (_, view), i in where.items()
                    if view == "labeled" or (view == "weak" and self.uses_entropy)] if self.uses_embedding else []
        embeddings = dict(zip(embedded, tf.split(
            model.embed(tf.concat([features[i] for i in embedded], 0)),
            [sizes[i] for i in embedded], 0))) if embedded else {}

        terms = {}
        for d in names:
            labels = batch[d]["labels"]
            label_size = tf.shape(labels)[1:3]
            labelled = where[(d, "labeled")]
            if w["supervised"] > 0:
                logits = model.decode(features[labelled], d, label_size)
                terms[f"supervised/{d}"] = losses.replica_masked_cross_entropy(labels, logits)
            sources = [s for s in names if (s, d) in cross_domain]
            if sources:
                sums = [losses.partial_label_cross_entropy_sum(
                    self.label_sets[(s, d)], batch[s]["labels"],
                    model.decode(features[where[cross_domain[(s, d)]]], d, tf.shape(batch[s]["labels"])[1:3]))
                    for s in sources]
                terms[f"cross_domain_supervision/{d}"] = losses.replica_mean(
                    tf.add_n([total for total, _ in sums]), tf.add_n([count for _, count in sums]))
            if w["embedding_supervision"] > 0:
                sim = model.similarity_logits(embeddings[labelled], d)
                sim = tf.image.resize(sim, label_size, method="bilinear")
                terms[f"embedding_supervision/{d}"] = losses.replica_masked_cross_entropy(labels, sim)
            if (d, "masked") in where:
                reconstructions = model.reconstruct(features[where[(d, "masked")]],
                                                    tf.shape(targets[d])[1:3])
                terms[f"masked_auxiliary/{d}"] = losses.masked_reconstruction_error(
                    targets[d], reconstructions, batch[d]["unlabeled_mask"])
            if (d, "weak") not in where:
                continue
            weak = where[(d, "weak")]
            if self.uses_entropy:
                unlabeled = embeddings[weak]
                if w["within_entropy"] > 0:
                    terms[f"within_entropy/{d}"] = losses.entropy(model.similarity_logits(unlabeled, d))
                others = [o for o in model.domains if o != d]
                if cross:
                    terms[f"cross_entropy/{d}"] = tf.add_n(
                        [losses.entropy(model.similarity_logits(unlabeled, o)) for o in others]
                    ) / float(len(others))
            if self.uses_consistency:
                strong = where.get((d, "strong"))
                pasted = where.get((d, "pasted"))
                terms.update(self._consistency_terms(
                    model, d, batch[d], features[weak], None if strong is None else features[strong],
                    None if pasted is None else features[pasted]))
        return terms

    def _masked_terms(self, model, batch, names, training):
        """``masked_reconstruction/<domain>``: the masked stage's crops of every domain
        (``pipeline.masked_dataset``: ``images`` and their ``image_mask``), one encoder pass."""
        for d in names:
            if "image_mask" not in batch[d]:
                raise ValueError(f"domain {d!r}: masked_reconstruction is on but the batch has no "
                                 "'image_mask' (pipeline.masked_dataset)")
        images = [model.preprocessor(d).normalize(batch[d]["images"]) for d in names]
        masks = [batch[d]["image_mask"] for d in names]
        sizes = [tf.shape(x)[0] for x in images]
        reconstructions = tf.split(model.reconstruct_masked(
            tf.concat(images, 0), tf.concat(masks, 0), training=training), sizes, 0)
        return {f"masked_reconstruction/{d}": losses.masked_reconstruction_error(x, r, m)
                for d, x, r, m in zip(names, images, reconstructions, masks)}

    def _consistency_terms(self, model, domain, batch, weak_features, strong_features, pasted_features):
        """The consistency terms of one domain (see the class docstring)."""
        c, w = self.consistency, self.weights
        size = tf.shape(batch["unlabeled"])[1:3]
        weak_logits = tf.cast(model.decode(weak_features, domain, size), tf.float32)
        probabilities = tf.stop_gradient(tf.nn.softmax(weak_logits))
        valid = batch["unlabeled_valid"]
        if c.distribution_alignment:
            probabilities = losses.align_distribution(probabilities, valid, batch["labels"],
                                                      labelled_prior=batch.get("labelled_prior"),
                                                      strength=c.alignment_strength)
        pseudo_labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        confidence = tf.reduce_max(probabilities, axis=-1)
        per_class = losses.class_adaptive_thresholds(
            pseudo_labels, confidence, valid, tf.shape(probabilities)[-1], c.threshold
        ) if c.class_adaptive_threshold else None

        def thresholds(labels):
            """The threshold of each pixel of ``labels``: one for all, or its class's."""
            return c.threshold if per_class is None else tf.gather(per_class, labels)

        terms = {}
        if w["consistency_strong"] > 0:
            box = batch["cutmix_box"]
            strong_logits = model.decode(strong_features, domain, size)
            pasted = strong_views.paste_partner(pseudo_labels, box)
            terms[f"consistency_strong/{domain}"] = losses.pseudo_label_cross_entropy(
                pasted, strong_views.paste_partner(confidence, box),
                strong_views.paste_partner(valid, box), strong_logits, thresholds(pasted))
        if w["consistency_paste"] > 0:
            # Pasted pixels: their true labels, always counted; the rest as the feature stream.
            pasted_labels = tf.cast(batch["pasted_labels"], tf.int32)
            mask = pasted_labels != IGNORE_LABEL
            targets = tf.where(mask, pasted_labels, pseudo_labels)
            terms[f"consistency_paste/{domain}"] = losses.pseudo_label_cross_entropy(
                targets, tf.where(mask, 1.0, confidence), tf.where(mask, 1.0, valid),
                model.decode(pasted_features, domain, size), thresholds(targets))
        if w["consistency_feature"] > 0:
            perturbed = channel_dropout(weak_features, c.feature_dropout, batch["unlabeled_seed"])
            terms[f"consistency_feature/{domain}"] = losses.pseudo_label_cross_entropy(
                pseudo_labels, confidence, valid, model.decode(perturbed, domain, size),
                thresholds(pseudo_labels))
        return terms

    def total(self, terms):
        """The weighted sum of ``terms``."""
        return tf.add_n([self.weights[key.split("/")[0]] * value for key, value in terms.items()])


def channel_dropout(features, rate, seeds):
    """Drops whole channels of each sample (``Dropout2d``), drawn from that sample's seed.

    Args:
      features: [B, H, W, C].
      rate: the probability of dropping a channel; kept ones are scaled by 1 / (1 - rate).
      seeds: int [B, 2], one stateless seed per sample (the same sample gets the
        same mask whichever replica or step count it runs under).
    """
    if rate <= 0:
        return features
    channels = tf.shape(features)[-1]
    noise = tf.map_fn(
        lambda seed: tf.random.stateless_uniform(
            [channels], tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 1)),
        seeds, fn_output_signature=tf.float32)
    keep = tf.cast(noise >= rate, features.dtype) / tf.cast(1.0 - rate, features.dtype)
    return features * keep[:, None, None, :]
