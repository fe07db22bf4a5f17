"""The method in one place: the stages each approach runs, and the loss it optimises.

Four approaches are compared (``config.method``):

* ``univ_full``: pretrain (supervised, all domains) -> centroids -> universal
  (every loss term: the entropy module on unlabelled images);
* ``univ_basic``: pretrain -> universal, supervised loss only (a shared encoder);
* ``finetune``: source (the first domain) -> target (the other domains),
  supervised loss only;
* ``supervised``: one independent model per domain, labelled data only; each
  is a one-domain ``univ_basic`` run of ``pretrain_steps + steps`` pre-training
  steps (``supervised_domain_config``) in ``supervised/<domain>/``.

A plan is data (``PLANS``): the trainer walks it and knows nothing of methods.
``Objective`` composes the loss terms of one stage on one batch; the model
only provides the architecture (``encode``, ``decode``, ``embed``,
``similarity_logits``) and a generic ``train_step`` that asks its objective.
"""

import dataclasses

import tensorflow as tf

from usss_tf import config as config_lib
from usss_tf import losses

METHODS = config_lib.METHODS  # The names; the config validates against them.

# Stage names: checkpoint folders and stages.json keys of a run directory.
PRETRAIN, CENTROIDS, UNIVERSAL, SOURCE, TARGET = "pretrain", "centroids", "universal", "source", "target"

LOSS_TERMS = ("supervised", "within_entropy", "cross_entropy", "embedding_supervision")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a plan.

    Attributes:
      name: the stage's name (its checkpoint folder).
      fits_centroids: the label-centroid stage (no optimizer steps) instead of training.
      domains: which domains it trains on: ``all``, ``first`` or ``rest``.
      steps_key: the ``train.*`` key that counts its steps.
      all_losses: every loss term of ``config.loss`` (else the supervised loss only).
    """

    name: str
    fits_centroids: bool = False
    domains: str = "all"
    steps_key: str = "pretrain_steps"
    all_losses: bool = False

    def steps(self, train_config):
        """Optimizer steps of this stage under ``train_config`` (0 for the centroid stage)."""
        return 0 if self.fits_centroids else getattr(train_config, self.steps_key)

    def select(self, domain_inputs):
        """The ``DomainInputs`` this stage trains on."""
        return {"all": domain_inputs, "first": domain_inputs[:1], "rest": domain_inputs[1:]}[self.domains]


PLANS = {
    "univ_full": (
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
    """The stages whose checkpoint can hold a run's result, latest first."""
    return tuple(reversed(PLANS.get(method, ())))


def has_label_centroids(method):
    """Whether ``method`` fits label centroids (and so trains the embedding branch)."""
    return any(stage.fits_centroids for stage in PLANS.get(method, ()))


def supervised_domain_config(config, domain_config):
    """The config of one domain's model in a ``supervised`` run: labelled data only.

    A ``univ_basic`` run of that domain alone whose pre-training lasts
    ``pretrain_steps + steps`` (so every method trains for the same steps).
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
    """``{term: weight}`` of ``stage``: every term of ``loss_config`` or the supervised one only."""
    if stage.all_losses:
        return dataclasses.asdict(loss_config)
    return {"supervised": loss_config.supervised}


class Objective:
    """The weighted loss terms of one stage, computed on one training batch.

    Args:
      weights: ``{term: weight}`` for terms of ``LOSS_TERMS``; missing terms
        are off, ``supervised`` defaults to 1.
      num_domains: the model's number of domains; with one there is no
        cross-domain term (its weight is set to 0).

    The terms (p_d is the softmax over domain d's classes of the similarity
    between a pixel's embedding and d's label centroids):

    * supervised: masked cross-entropy of each decoder on its labelled pixels;
    * within_entropy (beta): H(p_d) on unlabelled pixels of domain d;
    * cross_entropy (alpha): mean over d' != d of H(p_d') on the same pixels;
    * embedding_supervision: cross-entropy of p_d against the labels, which
      keeps the embedding from collapsing onto one centroid.
    """

    def __init__(self, weights=None, num_domains=None):
        merged = dict.fromkeys(LOSS_TERMS, 0.0)
        merged["supervised"] = 1.0
        for key, value in (weights or {}).items():
            if key not in merged:
                raise ValueError(f"unknown loss term {key!r}; expected one of {LOSS_TERMS}")
            merged[key] = float(value)
        if num_domains is not None and num_domains < 2:
            merged["cross_entropy"] = 0.0
        self.weights = merged

    @property
    def uses_unlabeled(self):
        return self.weights["within_entropy"] > 0 or self.weights["cross_entropy"] > 0

    @property
    def uses_embedding(self):
        return self.uses_unlabeled or self.weights["embedding_supervision"] > 0

    def terms(self, model, batch, training=True):
        """Every weighted loss term for one batch, as a dict ``{term/domain: scalar}``.

        ``batch`` maps each domain to ``{"images", "labels"}`` (crops the
        pipeline already resized by the domain's scale) and, when the entropy
        terms are on, ``"unlabeled"`` images of the same size. All images go
        through the encoder in one pass.
        """
        names = [d for d in model.domains if d in batch]
        w = self.weights
        use_unlabeled = self.uses_unlabeled
        cross = w["cross_entropy"] > 0 and len(model.domains) > 1
        # What is left of the domain's preprocessing is normalisation: the
        # augmentation resized images and masks together.
        chunks = []
        for d in names:
            normalize = model.preprocessor(d).normalize
            chunks.append(normalize(batch[d]["images"]))
            if use_unlabeled and "unlabeled" in batch[d]:
                chunks.append(normalize(batch[d]["unlabeled"]))
        sizes = [tf.shape(c)[0] for c in chunks]
        features = tf.split(model.encode(tf.concat(chunks, 0), training=training), sizes, 0)
        embeddings = (tf.split(model.embed(tf.concat(features, 0)), sizes, 0)
                      if self.uses_embedding else None)

        terms = {}
        index = 0
        for d in names:
            labels = batch[d]["labels"]
            label_size = tf.shape(labels)[1:3]
            labelled = index
            index += 1
            if w["supervised"] > 0:
                logits = model.decode(features[labelled], d, label_size)
                terms[f"supervised/{d}"] = losses.replica_masked_cross_entropy(labels, logits)
            if w["embedding_supervision"] > 0:
                sim = model.similarity_logits(embeddings[labelled], d)
                sim = tf.image.resize(sim, label_size, method="bilinear")
                terms[f"embedding_supervision/{d}"] = losses.replica_masked_cross_entropy(labels, sim)
            if use_unlabeled and "unlabeled" in batch[d]:
                unlabeled = embeddings[index]
                index += 1
                if w["within_entropy"] > 0:
                    terms[f"within_entropy/{d}"] = losses.entropy(model.similarity_logits(unlabeled, d))
                others = [o for o in model.domains if o != d]
                if cross:
                    terms[f"cross_entropy/{d}"] = tf.add_n(
                        [losses.entropy(model.similarity_logits(unlabeled, o)) for o in others]
                    ) / float(len(others))
        return terms

    def total(self, terms):
        """The weighted sum of ``terms``."""
        return tf.add_n([self.weights[key.split("/")[0]] * value for key, value in terms.items()])
