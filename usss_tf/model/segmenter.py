"""``UniversalSegmenter``: one shared encoder, a decoder per domain, an entropy module.

The model is the architecture: ``encode``, ``decode``, ``embed`` and
``similarity_logits`` (p_d is the softmax over domain d's classes of the
similarity between a pixel's embedding and d's label centroids,
``LabelCentroids``). ``call`` returns a dict of class logits keyed by domain,
at the input size. ``train_step`` takes one optimizer step on the loss its
``objective`` composes (``usss_tf.method.Objective``: which terms, which
weights, per stage), on a batch holding, for every domain, a labelled batch
and an unlabelled batch.

Inference has one path: ``domain_logits`` (images of one domain at any size
-> that domain's class logits at a requested size), with ``segment`` (class
ids and probabilities) and ``nearest_classes`` (the embedding branch's label
in every domain's space) on top. Each starts with the domain's
``DomainPreprocessor`` (its scale, then normalisation). Validation,
``usss-tf evaluate``, the TensorBoard panels and every exported signature call
these methods and nothing else.
"""

import keras
import tensorflow as tf

from usss_tf import method
from usss_tf.data import masking
from usss_tf.model.backbones import build_backbone
from usss_tf.model.heads import DomainDecoder, EmbeddingHead, LabelCentroids, ReconstructionHead
from usss_tf.model.preprocessing import DomainPreprocessor


@keras.saving.register_keras_serializable("usss_tf")
class UniversalSegmenter(keras.Model):
    """Universal semi-supervised segmentation model.

    Args:
      domains: ordered mapping of domain name -> number of classes. The first
        domain is the default one (e.g. for ``serving_default``).
      backbone: ``erfnet``, ``drn_d_22/38/54/105`` or ``hub`` (a keras-hub
        preset folder in ``backbone_weights``); see ``model.backbones``.
      width: channel multiplier of the backbone.
      depth: block multiplier of the backbone's residual stages (1.0: the
        published network; less for quick runs and tests).
      embedding_dim: d, the size of the pixel embedding.
      centroids_per_class: K label centroids per class.
      temperature: tau of the centroid similarity.
      dropout: ERFNet dropout rate.
      sync_batchnorm: normalise over all replicas under a distribution strategy.
      backbone_weights: optional local pretrained weights for the backbone
        (a DRN ``.pth``, a ``.weights.h5`` or a keras-hub preset folder).
      scales: optional mapping of domain name -> the scale its images are
        resized by before the encoder (default 1.0), as in training.
      reconstruction: add the ``ReconstructionHead`` of masked image
        modelling (``univ_full``'s ``masked`` stage, ``loss.masked_auxiliary``); inference never uses it.
    """

    def __init__(
        self,
        domains,
        backbone="erfnet",
        width=1.0,
        depth=1.0,
        embedding_dim=64,
        centroids_per_class=3,
        temperature=0.1,
        dropout=0.0,
        sync_batchnorm=False,
        backbone_weights=None,
        scales=None,
        reconstruction=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.domains = {str(name): int(n) for name, n in dict(domains).items()}
        if not self.domains:
            raise ValueError("UniversalSegmenter needs at least one domain")
        scales = dict(scales or {})
        unknown = sorted(set(scales) - set(self.domains))
        if unknown:
            raise ValueError(f"scales given for unknown domain(s) {unknown}; domains: {list(self.domains)}")
        self.scales = {name: float(scales.get(name, 1.0)) for name in self.domains}
        self.backbone_name = backbone
        self.width = width
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.centroids_per_class = centroids_per_class
        self.temperature = temperature
        self.dropout = dropout
        self.sync_batchnorm = sync_batchnorm
        self.backbone_weights = backbone_weights
        self.reconstruction = bool(reconstruction)

        self.encoder = build_backbone(
            backbone, weights=backbone_weights, width=width, depth=depth, dropout=dropout,
            sync_batchnorm=sync_batchnorm,
        )
        self.embedding = EmbeddingHead(embedding_dim, name="embedding")
        if self.reconstruction:
            self.reconstruction_head = ReconstructionHead(name="reconstruction")
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
            setattr(
                self,
                f"preprocessor_{name}",
                DomainPreprocessor(self.scales[name], name=f"preprocessor_{name}"),
            )
        # What train_step optimises; the trainer sets each stage's (usss_tf.method).
        self.objective = method.Objective()

    # -- building blocks -------------------------------------------------------------

    @property
    def domain_names(self):
        return list(self.domains)

    def decoder(self, domain):
        return getattr(self, f"decoder_{domain}")

    def label_centroids(self, domain):
        return getattr(self, f"centroids_{domain}")

    def preprocessor(self, domain):
        """Domain ``domain``'s ``DomainPreprocessor`` (its scale and the input normalisation)."""
        return getattr(self, f"preprocessor_{domain}")

    def weights_checkpoint(self):
        """A ``tf.train.Checkpoint`` of the model's weights and nothing else, under the names a
        training checkpoint (``tf.train.Checkpoint(model=...)``) gives them, so either restores
        from the other.

        Not ``tf.train.Checkpoint(model=self)``: Keras tracks the compiled optimizer as the
        model's child ``optimizer``, so that checkpoint holds the optimizer too, and restored
        into a model not compiled yet it hands the saved optimizer state (its step count, so
        its place in the learning-rate schedule, and its moments) to whatever optimizer the next
        ``compile`` attaches. A stage started in a new process from the previous stage's
        checkpoint would then not start from a fresh optimizer, as it does in one process.
        """
        layers = {name: value for name, value in vars(self).items() if isinstance(value, keras.layers.Layer)}
        return tf.train.Checkpoint(model=tf.train.Checkpoint(**layers))

    def encode(self, inputs, training=False):
        """Shared encoder: normalised float RGB [B, H, W, 3] -> features at stride 8."""
        return self.encoder(inputs, training=training)

    def features(self, images, domain, training=False):
        """Encoder features of 0..255 images of ``domain`` at their camera resolution."""
        return self.encode(self.preprocessor(domain)(images), training=training)

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

    def reconstruct(self, features, size):
        """The normalised images of ``size`` (H, W) the reconstruction head reads from ``features``."""
        if not self.reconstruction:
            raise ValueError("this model has no reconstruction head (reconstruction=False)")
        return self.reconstruction_head(features, size=size)

    def reconstruct_masked(self, images, masks, training=False):
        """Masked image modelling's one path: normalised ``images`` [B, H, W, 3] with the
        ``masks`` [B, H, W, 1] cells blanked, encoded, reconstructed at their size."""
        features = self.encode(masking.blank(images, masks), training=training)
        return self.reconstruct(features, tf.shape(images)[1:3])

    # -- inference: the one path ----------------------------------------------------

    def domain_logits(self, images, domain, output_size=None, features=None):
        """Class logits of ``domain`` for 0..255 images of that domain, at ``output_size``.

        Images are resized by the domain's scale and normalised
        (``preprocessor``), encoded, decoded and upsampled bilinearly to
        ``output_size`` (default: the images' own size). ``features`` lets a
        caller that already encoded the images reuse them.
        """
        if output_size is None:
            output_size = tf.shape(images)[1:3]
        if features is None:
            features = self.features(images, domain)
        return self.decode(features, domain, output_size)

    def segment(self, images, domain, output_size=None):
        """``{"class_ids": uint8 [B, H, W], "probabilities": float32 [B, H, W, C]}`` of ``domain``."""
        logits = self.domain_logits(images, domain, output_size)
        return {
            "class_ids": tf.cast(tf.argmax(logits, axis=-1), tf.uint8),
            "probabilities": tf.nn.softmax(logits, axis=-1),
        }

    def nearest_classes(self, images, domain, output_size=None, features=None):
        """The embedding branch on 0..255 images of ``domain``.

        Returns ``embeddings`` (unit norm, stride 8) and, for every domain
        ``d`` of the model, ``nearest_class_<d>`` uint8 [B, H, W]: the class of
        ``d``'s label space whose centroid is most similar, with the
        similarities upsampled bilinearly to ``output_size`` (default: the
        images' size) like the decoders' logits. The images are seen at
        ``domain``'s scale; the label spaces are every domain's.
        """
        if output_size is None:
            output_size = tf.shape(images)[1:3]
        if features is None:
            features = self.features(images, domain)
        embeddings = self.embed(features)
        outputs = {"embeddings": embeddings}
        for name in self.domains:
            similarity = tf.image.resize(
                self.similarity_logits(embeddings, name), output_size, method="bilinear"
            )
            outputs[f"nearest_class_{name}"] = tf.cast(tf.argmax(similarity, axis=-1), tf.uint8)
        return outputs

    def call(self, images, training=False):
        """``{domain: logits at the input size}``, each domain at its own scale.

        Domains that share a scale share one pass through the encoder.
        """
        size = tf.shape(images)[1:3]
        features_by_scale = {}
        outputs = {}
        for d in self.domains:
            scale = self.scales[d]
            if scale not in features_by_scale:
                features_by_scale[scale] = self.features(images, d, training=training)
            outputs[d] = self.decode(features_by_scale[scale], d, size)
        return outputs

    def build(self, input_shape=(None, None, None, 3)):
        """Creates every weight: decoders, embedding head and centroids."""
        feature_shape = tuple(self.encoder.output.shape)
        for domain in self.domains:
            self.decoder(domain).build(feature_shape)
        self.embedding.build(feature_shape)
        if self.reconstruction:
            self.reconstruction_head.build(feature_shape)
        self.built = True

    # -- training --------------------------------------------------------------------

    def compile(self, optimizer="adamw", **kwargs):
        kwargs.setdefault("jit_compile", False)  # XLA: no CPU gain, fails under MirroredStrategy.
        super().compile(optimizer=optimizer, **kwargs)

    def train_step(self, data):
        """One optimizer step on the loss of ``self.objective`` (a ``method.Objective``).

        The objective is set before ``compile`` (the trainer does, per stage):
        its weights are traced into the step.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self.objective.terms(self, data, training=True)
            loss = self.objective.total(terms)
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

    def get_config(self):
        return {
            **super().get_config(),
            "domains": dict(self.domains),
            "backbone": self.backbone_name,
            "width": self.width,
            "depth": self.depth,
            "embedding_dim": self.embedding_dim,
            "centroids_per_class": self.centroids_per_class,
            "temperature": self.temperature,
            "dropout": self.dropout,
            "sync_batchnorm": self.sync_batchnorm,
            # Weights live in the checkpoint; a keras-hub preset also holds the architecture.
            "backbone_weights": self.backbone_weights if self.backbone_name == "hub" else None,
            "scales": dict(self.scales),
            "reconstruction": self.reconstruction,
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
                depth=m.depth,
                embedding_dim=m.embedding_dim,
                centroids_per_class=m.centroids_per_class,
                temperature=m.temperature,
                dropout=m.dropout,
                sync_batchnorm=m.sync_batchnorm,
                backbone_weights=m.backbone_weights,
                scales={d.name: d.scale for d in config.domains},
                reconstruction=method.trains_masked_modelling(config),
                name="universal_segmenter",
            )
