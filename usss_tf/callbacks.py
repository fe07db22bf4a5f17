"""Per-step TensorBoard scalars and a progress bar (a Keras callback the trainer calls)."""

import sys
import time

import keras
import tensorflow as tf


def shows_progress(verbose):
    """Whether a progress bar is drawn: asked for, and stdout is a terminal (no codes in logs)."""
    return bool(verbose) and sys.stdout.isatty()


class TrainingLogger(keras.callbacks.Callback):
    """Writes every loss term, the learning rate and images/s to TensorBoard.

    One instance spans a whole stage; a resumed stage starts at ``first_step``
    (its checkpointed step counter), so the curves continue where they stopped.

    Args:
      writer: a ``tf.summary`` file writer.
      stage: tag prefix, e.g. ``"universal"``.
      step_offset: global step of this stage's step 0 (earlier stages' steps).
      log_every: steps between scalar writes.
      images_per_step: images the step consumes (all domains, both streams).
      total_steps: steps of the stage, for the progress bar.
      verbose: 0 silent, 1 progress bar (only on a terminal: a log file gets
        no cursor codes, only the stage's validation lines).
      first_step: the stage's step when this ``fit`` starts (0 unless resumed).
    """

    def __init__(self, writer, stage, step_offset, log_every, images_per_step, total_steps, verbose=1,
                 first_step=0):
        super().__init__()
        self.writer = writer
        self.stage = stage
        self.step_offset = step_offset
        self.log_every = log_every
        self.images_per_step = images_per_step
        self.total_steps = total_steps
        self.progbar = (keras.utils.Progbar(total_steps, stateful_metrics=None)
                        if shows_progress(verbose) else None)
        self._first_step = self._last_step = first_step
        self._last_time = None
        self.last_logs = {}
        if self.progbar is not None:
            self.progbar.update(first_step)

    def on_train_begin(self, logs=None):
        self._last_time = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # Reading values back forces a host sync: only on logging steps.
        step = self._first_step + batch + 1
        if step % self.log_every != 0 and step != self.total_steps:
            return
        logs = {k: float(v) for k, v in (logs or {}).items()}
        self.last_logs = logs
        now = time.perf_counter()
        elapsed = now - self._last_time
        steps = step - self._last_step
        with self.writer.as_default(step=self.step_offset + step):
            for key, value in logs.items():
                tf.summary.scalar(f"{self.stage}/{key}", value)
            if steps > 0 and elapsed > 0:
                tf.summary.scalar(
                    f"{self.stage}/images_per_second", steps * self.images_per_step / elapsed
                )
        self.writer.flush()
        self._last_time, self._last_step = now, step
        if self.progbar is not None:
            shown = [(k, v) for k, v in logs.items() if "/" not in k and k != "learning_rate"]
            shown += [(k.split("/")[0], v) for k, v in logs.items() if "/" in k]
            self.progbar.update(step, values=_merge(shown))


def _merge(pairs):
    """Sums terms of the same name over domains for a compact progress line."""
    merged = {}
    for key, value in pairs:
        merged[key] = merged.get(key, 0.0) + value
    return list(merged.items())
