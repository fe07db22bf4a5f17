"""A run's TensorBoard dashboards beyond the scalars: panels, confusion, IoU tables, hparams.

``train.Experiment`` writes the scalars (losses, learning rate, images/s,
mIoU, pixel accuracy, per-class IoU); ``RunMonitor`` adds what a person
watching a long run wants to look at, into the same log directory::

    tensorboard/                 HParams: the run's hyper-parameters (written at start)
                                 Projector: label centroids (usss_tf.projector)
    tensorboard/validation/      Images: panels/<domain>, confusion/<domain>,
                                         reconstruction/<domain> (the masked stage)
                                 Text:   iou_table/<domain>
                                 Scalars: miou/mean (next to miou/<domain>)

Panels show a few fixed validation images per domain (the first
``train.panel_images`` by example key, so the same images every time):
input | ground truth | prediction, plus the embedding branch's map (each
pixel's nearest label centroid of the domain) once the run has centroids.
During ``univ_full``'s masked stage the same images show what masked image
modelling learns: masked input | reconstruction | input.
"""

import dataclasses
import pathlib

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from usss_tf import config as config_lib
from usss_tf import inference, projector, visualize
from usss_tf import method as method_lib
from usss_tf.data import masking

PANEL_DESCRIPTION = (
    "input | ground truth | prediction{} — colours are the domain's palette, ignore is black"
)
RECONSTRUCTION_DESCRIPTION = (
    "masked input (blanked cells in the mean colour) | reconstruction | input, at the domain's "
    "scale: the masked stage's encoder and reconstruction head on fixed validation images"
)
_DOMAIN_KEYS_SKIPPED = {"name", "root", "manual_dir", "generate"}


def _hparam_value(value):
    if value is None:
        return "none"
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # lists (e.g. data.crop) as text.


def hparam_values(config):
    """The config as flat ``{name: bool | int | float | str}`` for the HParams dashboard.

    Domain settings are keyed by domain name (``synth_city.labeled``), so runs
    that list their domains in another order still line up; data roots and
    keys that only change logging are left out.
    """
    values = {
        "name": config.name,
        "method": config.method,
        "seed": config.seed,
        "domains": ",".join(d.name for d in config.domains),
    }
    for domain in config.domains:
        for key, value in dataclasses.asdict(domain).items():
            if key not in _DOMAIN_KEYS_SKIPPED:
                values[f"{domain.name}.{key}"] = value
    for section in config_lib.SECTIONS:
        values.update(config_lib.flatten(dataclasses.asdict(getattr(config, section)), f"{section}."))
    return {k: _hparam_value(v) for k, v in values.items() if k not in config_lib.WATCH_ONLY_KEYS}


def hparam_metrics(domain_names):
    """The HParams dashboard's metric columns: final validation figures of each domain."""
    metrics = [hp.Metric("miou/mean", group="validation", display_name="mIoU (mean of domains)")]
    for name in domain_names:
        metrics.append(hp.Metric(f"miou/{name}", group="validation", display_name=f"mIoU {name}"))
        metrics.append(hp.Metric(
            f"pixel_accuracy/{name}", group="validation", display_name=f"pixel accuracy {name}"
        ))
    return metrics


class RunMonitor:
    """Writes one run's image panels, confusion images, IoU tables, hparams and projector.

    Args:
      log_dir: the run's ``tensorboard/`` folder.
      domain_inputs: the run's ``DomainInputs`` (validation examples, scale).
      config: the ``ExperimentConfig``.
      writer: the validation ``tf.summary`` writer (``log_dir/validation``).
      has_centroids: ``() -> bool``, whether the model has fitted label
        centroids yet (the centroid stage finished); asked only when panels
        or the projector are written.
      predictors: optional dict domain -> ``inference.DomainPredictor`` shared
        with validation, so the inference path is traced once per run.
    """

    def __init__(self, log_dir, domain_inputs, config, writer, has_centroids=lambda: False,
                 predictors=None):
        self.log_dir = pathlib.Path(log_dir)
        self.has_centroids = has_centroids
        self.inputs = list(domain_inputs)
        self.config = config
        self.writer = writer
        train = config.train
        self.panel_images = train.panel_images
        self.validation_every = train.validation_every
        self.image_every = self.validation_every if train.image_every is None else train.image_every
        self._samples = None
        self._predictors = {} if predictors is None else predictors
        self._last_panel_step = None

    # -- hyper-parameters -----------------------------------------------------------

    def write_hparams(self):
        """The HParams dashboard entry of this run: its config now, its mIoU as it comes.

        The session lives in ``log_dir`` and reads its metrics from the
        ``validation`` run below it, so ``tensorboard --logdir`` on a folder of
        many runs lists them side by side.
        """
        writer = tf.summary.create_file_writer(str(self.log_dir))
        with writer.as_default(step=0):
            values = hparam_values(self.config)
            hp.hparams_config(
                hparams=[hp.HParam(name) for name in values],
                metrics=hparam_metrics([i.domain.name for i in self.inputs]),
            )
            hp.hparams(values)
        writer.close()

    # -- projector ------------------------------------------------------------------

    def write_projector(self, model, global_step):
        """The label centroids in the embedding projector (runs that have centroids only)."""
        if not method_lib.has_label_centroids(self.config.method):
            return None
        return projector.write_centroid_projector(
            self.log_dir, model, [i.domain for i in self.inputs], global_step
        )

    # -- validation -----------------------------------------------------------------

    def on_validation(self, model, results, confusions, global_step):
        """Per domain: the IoU table and the confusion image; the mean mIoU; panels; projector."""
        with self.writer.as_default(step=global_step):
            if results:
                tf.summary.scalar("miou/mean", float(np.mean([r["miou"] for r in results.values()])))
            for inputs in self.inputs:
                domain = inputs.domain
                if domain.name not in results or domain.name not in confusions:
                    continue
                confusion = confusions[domain.name]
                tf.summary.text(
                    f"iou_table/{domain.name}",
                    visualize.iou_table(domain, results[domain.name], confusion),
                )
                tf.summary.image(
                    f"confusion/{domain.name}",
                    visualize.confusion_image(confusion, domain.palette)[None],
                    description=(
                        "row-normalised confusion: rows = true class, columns = predicted class, "
                        "in train-id order (see iou_table); edge colours = class colours; "
                        "dark = 0, yellow = 1, grey = class absent from the labels"
                    ),
                )
        self.writer.flush()
        with_centroids = self.has_centroids()
        self.write_panels(model, global_step, with_centroids)
        if with_centroids:
            self.write_projector(model, global_step)

    # -- panels ---------------------------------------------------------------------

    def on_step(self, model, step, global_step):
        """Panels every ``image_every`` steps of a stage (once per global step)."""
        if self._panels_due(step):
            self.write_panels(model, global_step, self.has_centroids())

    def on_masked_step(self, model, step, steps, global_step):
        """Reconstruction panels of the masked stage, which has no validation: at the
        validation interval, every ``image_every`` steps and at its last step."""
        if step % self.validation_every == 0 or step == steps or self._panels_due(step):
            self.write_reconstruction_panels(model, global_step)

    def _panels_due(self, step):
        return bool(self.image_every) and step % self.image_every == 0

    def _panel_samples(self):
        """``{domain: [(image uint8 [1, h, w, 3], display image [H, W, 3], labels [H, W])]}``."""
        if self._samples is None:
            self._samples = {}
            for inputs in self.inputs:
                examples = sorted(inputs.val, key=lambda e: e.key)[: self.panel_images]
                samples = []
                for _, image, labels in inference.load_examples(
                        examples, inputs.domain.lookup_table()):
                    display = image
                    if image.shape[:2] != labels.shape:
                        display = tf.image.resize(image, labels.shape, "bilinear").numpy()
                    samples.append((image[None], display, labels))
                if samples:
                    self._samples[inputs.domain.name] = samples
        return self._samples

    def reconstruction_panels(self, model, domain_name):
        """``uint8 [N, h, 3 w, 3]``: masked input | reconstruction | input of ``domain_name``'s
        panel images at the domain's scale, each masked as the masked stage masks a crop
        (``masking.patch_mask``, seeded by the run's seed and the image's index); None
        without images."""
        settings = self.config.masked_modelling
        preprocessor = model.preprocessor(domain_name)

        def display(normalized):
            pixels = np.asarray(normalized, np.float32)[0] * preprocessor.std + preprocessor.mean
            return np.clip(pixels, 0, 255).round().astype(np.uint8)

        rows = []
        for index, (image, _, _) in enumerate(self._panel_samples().get(domain_name, [])):
            scaled = preprocessor.resize(image)
            size = tuple(int(n) for n in scaled.shape[1:3])
            mask = masking.patch_mask(size, settings.patch, settings.mask_ratio,
                                      [self.config.seed, index])[None]
            normalized = preprocessor.normalize(scaled)
            seen = masking.blank(normalized, mask)
            reconstruction = model.reconstruct_masked(normalized, mask)
            rows.append(np.concatenate([display(seen), display(reconstruction),
                                        display(normalized)], axis=1))
        return visualize.stack_rows(rows) if rows else None

    def write_reconstruction_panels(self, model, global_step):
        """Writes ``reconstruction/<domain>`` for every domain at ``global_step``."""
        if not self.panel_images:
            return
        with self.writer.as_default(step=global_step):
            for inputs in self.inputs:
                panels = self.reconstruction_panels(model, inputs.domain.name)
                if panels is not None:
                    tf.summary.image(f"reconstruction/{inputs.domain.name}", panels,
                                     max_outputs=len(panels), description=RECONSTRUCTION_DESCRIPTION)
        self.writer.flush()

    def predict_panels(self, model, domain, with_centroids=False):
        """``uint8 [N, H, W * P, 3]`` panels of ``domain``'s fixed validation images.

        Predictions come from the model's one inference path
        (``inference.DomainPredictor``), the one evaluation and export use.
        """
        predictor = inference.cached_predictor(self._predictors, model, domain.name)
        rows = []
        for image, display, labels in self._panel_samples().get(domain.name, []):
            prediction = predictor.class_ids(image, labels.shape)[0]
            centroid_map = predictor.nearest_class(image, labels.shape)[0] if with_centroids else None
            rows.append(visualize.panel_row(domain, display, labels, prediction, centroid_map))
        return visualize.stack_rows(rows) if rows else None

    def write_panels(self, model, global_step, with_centroids=False):
        """Writes ``panels/<domain>`` for every domain at ``global_step`` (once per step)."""
        if not self.panel_images or global_step == self._last_panel_step:
            return
        self._last_panel_step = global_step
        with self.writer.as_default(step=global_step):
            for inputs in self.inputs:
                panels = self.predict_panels(model, inputs.domain, with_centroids)
                if panels is None:
                    continue
                tf.summary.image(
                    f"panels/{inputs.domain.name}", panels, max_outputs=len(panels),
                    description=PANEL_DESCRIPTION.format(
                        " | nearest label centroid (embedding branch)" if with_centroids else ""
                    ),
                )
        self.writer.flush()
