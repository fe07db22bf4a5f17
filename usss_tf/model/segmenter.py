"""``UniversalSegmenter``: one shared encoder, a decoder per domain, an entropy module.

``call`` returns a dict of class logits keyed by domain, at the input size.
``train_step`` implements one optimizer step of the method on a batch holding,
for every domain, a labelled batch and an unlabelled batch:

* supervised: masked cross-entropy of each decoder on its labelled pixels;
* within-domain entropy (beta): H(p_d) on unlabelled pixels of domain d;
* cross-domain entropy (alpha): mean over d' != d of H(p_d') on the same pixels;
* embedding supervision: cross-entropy of p_d against the labels, which keeps
  the embedding from collapsing onto one centroid.

p_d is the softmax over domain d's classes of the similarity between a pixel's
embedding and the label centroids (``LabelCentroids``).
"""

import keras
import tensorflow as tf

from usss_tf import losses
from usss_tf.metrics import ConfusionMatrix
from usss_tf.model.backbones import build_backbone
from usss_tf.model.heads import DomainDecoder, EmbeddingHead, LabelCentroids

# ImageNet statistics; images enter the model as 0..255 RGB of any dtype.
_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

LOSS_TERMS = ("supervised", "within_entropy", "cross_entropy", "embedding_supervision")


@keras.saving.register_keras_serializable("usss_tf")
class UniversalSegmenter(keras.Model):
    """Universal semi-supervised segmentation model.

    Args:
      domains: ordered mapping of domain name -> number of classes. The first
        domain is the default one (e.g. for ``serving_default``).
      backbone: ``erfnet``, ``drn_d_22`` or ``drn_d_38``.
      width: channel multiplier of the backbone.
      embedding_dim: d, the size of the pixel embedding.
      centroids_per_class: K label centroids per class.
      temperature: tau of the centroid similarity.
      dropout: ERFNet dropout rate.
      sync_batchnorm: normalise over all replicas under a distribution strategy.
      backbone_weights: optional local weights file for the backbone.
    """

    def __init__(
        self,
        domains,
        backbone="erfnet",
        width=1.0,
        embedding_dim=64,
        centroids_per_class=3,
        temperature=0.1,
        dropout=0.0,
        sync_batchnorm=False,
        backbone_weights=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.domains = {str(name): int(n) for name, n in dict(domains).items()}
        if not self.domains:
            raise ValueError("UniversalSegmenter needs at least one domain")
        self.backbone_name = backbone
        self.width = width
        self.embedding_dim = embedding_dim
        self.centroids_per_class = centroids_per_class
        self.temperature = temperature
        self.dropout = dropout
        self.sync_batchnorm = sync_batchnorm
        self.backbone_weights = backbone_weights

        self.encoder = build_backbone(
            backbone, width=width, dropout=dropout, sync_batchnorm=sync_batchnorm,
            weights=backbone_weights,
        )
        self.embedding = EmbeddingHead(embedding_dim, name="embedding")
        # One attribute per domain (not a dict): attributes are tracked by
        # tf.train.Checkpoint, dict entries are not.
        for name, num_classes in self.domains.items():
            setattr(self, f"decoder_{name}", DomainDecoder(num_classes, name=f"decoder_{name}"))
            setattr(
                self,
                f"centroids_{name}",
                LabelCentroids(
                    num_classes, centroids_per_class, embedding_dim, temperature,
                    name=f"centroids_{name}",
                ),
            )
            setattr(self, f"confusion_{name}", ConfusionMatrix(num_classes, name=f"miou_{name}"))
        self.loss_weights_ = dict.fromkeys(LOSS_TERMS, 0.0)
        self.loss_weights_["supervised"] = 1.0

    # -- building blocks -------------------------------------------------------------

    @property
    def domain_names(self):
        return list(self.domains)

    def decoder(self, domain):
        return getattr(self, f"decoder_{domain}")

    def label_centroids(self, domain):
        return getattr(self, f"centroids_{domain}")

    def confusion(self, domain):
        return getattr(self, f"confusion_{domain}")

    def encode(self, images, training=False):
        """Shared encoder: 0..255 RGB [B, H, W, 3] -> features at stride 8."""
        x = (tf.cast(images, tf.float32) - _MEAN) / _STD
        return self.encoder(x, training=training)

    def decode(self, features, domain, size):
        """Domain ``domain``'s class logits, bilinearly upsampled to ``size`` (H, W)."""
        logits = self.decoder(domain)(features)
        return tf.image.resize(logits, size, method="bilinear")

    def embed(self, features):
        """Unit-norm pixel embeddings at stride 8."""
        return self.embedding(features)

    def similarity_logits(self, embeddings, domain):
        """Logits of p_domain(c | x) from the label centroids, [..., C_domain]."""
        return self.label_centroids(domain)(embeddings)

    def call(self, images, training=False):
        size = tf.shape(images)[1:3]
        features = self.encode(images, training=training)
        return {d: self.decode(features, d, size) for d in self.domains}

    def build(self, input_shape=(None, None, None, 3)):
        """Creates every weight: decoders, embedding head and centroids."""
        feature_shape = tuple(self.encoder.output.shape)
        for domain in self.domains:
            self.decoder(domain).build(feature_shape)
        self.embedding.build(feature_shape)
        self.built = True

    # -- training --------------------------------------------------------------------

    def compile(self, optimizer="adamw", loss_weights=None, **kwargs):
        """Sets the optimizer and the weight of each loss term (``LOSS_TERMS``)."""
        weights = dict.fromkeys(LOSS_TERMS, 0.0)
        weights["supervised"] = 1.0
        for key, value in (loss_weights or {}).items():
            if key not in weights:
                raise ValueError(f"unknown loss term {key!r}; expected one of {LOSS_TERMS}")
            weights[key] = float(value)
        if len(self.domains) < 2:
            weights["cross_entropy"] = 0.0
        self.loss_weights_ = weights
        kwargs.setdefault("jit_compile", False)  # XLA: no CPU gain, fails under MirroredStrategy.
        super().compile(optimizer=optimizer, **kwargs)

    def compute_loss_terms(self, batch, training=True):
        """Every weighted loss term for one batch, as a dict ``{term/domain: scalar}``.

        ``batch`` maps each domain to ``{"images", "labels"}`` and, when the
        entropy terms are on, ``"unlabeled"`` images of the same size. All images
        go through the encoder in one pass.
        """
        names = [d for d in self.domains if d in batch]
        w = self.loss_weights_
        use_unlabeled = w["within_entropy"] > 0 or w["cross_entropy"] > 0
        use_embedding = use_unlabeled or w["embedding_supervision"] > 0

        chunks, sizes = [], []
        for d in names:
            chunks.append(batch[d]["images"])
            if use_unlabeled and "unlabeled" in batch[d]:
                chunks.append(batch[d]["unlabeled"])
        images = tf.concat([tf.cast(c, tf.float32) for c in chunks], axis=0)
        sizes = [tf.shape(c)[0] for c in chunks]
        features = tf.split(self.encode(images, training=training), sizes, axis=0)
        embeddings = tf.split(self.embed(tf.concat(features, 0)), sizes, 0) if use_embedding else None

        terms = {}
        index = 0
        for d in names:
            labels = batch[d]["labels"]
            label_size = tf.shape(labels)[1:3]
            labelled_index = index
            index += 1
            if w["supervised"] > 0:
                logits = self.decode(features[labelled_index], d, label_size)
                terms[f"supervised/{d}"] = losses.masked_cross_entropy(labels, logits)
            if w["embedding_supervision"] > 0:
                sim = self.similarity_logits(embeddings[labelled_index], d)
                sim = tf.image.resize(sim, label_size, method="bilinear")
                terms[f"embedding_supervision/{d}"] = losses.masked_cross_entropy(labels, sim)
            if use_unlabeled and "unlabeled" in batch[d]:
                unlabeled = embeddings[index]
                index += 1
                if w["within_entropy"] > 0:
                    terms[f"within_entropy/{d}"] = losses.entropy(
                        self.similarity_logits(unlabeled, d)
                    )
                others = [o for o in self.domains if o != d]
                if w["cross_entropy"] > 0 and others:
                    terms[f"cross_entropy/{d}"] = tf.add_n(
                        [losses.entropy(self.similarity_logits(unlabeled, o)) for o in others]
                    ) / float(len(others))
        return terms

    def total_loss(self, terms):
        return tf.add_n(
            [self.loss_weights_[key.split("/")[0]] * value for key, value in terms.items()]
        )

    def train_step(self, data):
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self.compute_loss_terms(data, training=True)
            loss = self.total_loss(terms)
            # Gradients are summed over replicas; dividing gives the global mean.
            # Under mixed_float16 the optimizer is a LossScaleOptimizer: it scales
            # the loss here and unscales the gradients in `apply`.
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        # Terms switched off leave some heads without gradient (e.g. the
        # embedding during pre-training): those variables are not stepped.
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        logs = {"loss": loss, **terms}
        logs["learning_rate"] = tf.convert_to_tensor(self.optimizer.learning_rate)
        return logs

    def test_step(self, data):
        """Accumulates each domain's confusion matrix; ``data`` maps domain -> images, labels.

        Images may be resized (the domain's scale); logits are compared with the
        labels at the labels' own resolution.
        """
        logs = {}
        for d in self.domains:
            if d not in data:
                continue
            labels = data[d]["labels"]
            features = self.encode(data[d]["images"], training=False)
            logits = self.decode(features, d, tf.shape(labels)[1:3])
            self.confusion(d).update_state(labels, tf.argmax(logits, axis=-1))
            logs[f"miou_{d}"] = self.confusion(d).result()
        return logs

    def get_config(self):
        return {
            **super().get_config(),
            "domains": dict(self.domains),
            "backbone": self.backbone_name,
            "width": self.width,
            "embedding_dim": self.embedding_dim,
            "centroids_per_class": self.centroids_per_class,
            "temperature": self.temperature,
            "dropout": self.dropout,
            "sync_batchnorm": self.sync_batchnorm,
            "backbone_weights": None,  # Weights live in the checkpoint, not the config.
        }

    @classmethod
    def from_experiment(cls, config, domain_registry=None):
        """Builds the model an ``ExperimentConfig`` describes, under its ``train.precision``."""
        from usss_tf import domains as registry
        from usss_tf import precision

        registry = domain_registry or registry
        m = config.model
        with precision.dtype_policy(getattr(config.train, "precision", "float32")):
            return cls(
                domains={d.name: registry.get_domain(d.name).num_classes for d in config.domains},
                backbone=m.backbone,
                width=m.width,
                embedding_dim=m.embedding_dim,
                centroids_per_class=m.centroids_per_class,
                temperature=m.temperature,
                dropout=m.dropout,
                sync_batchnorm=m.sync_batchnorm,
                backbone_weights=m.backbone_weights,
                name="universal_segmenter",
            )
