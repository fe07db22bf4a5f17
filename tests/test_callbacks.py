from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
import tensorflow as tf

from usss_tf.callbacks import TrainingLogger, shows_progress


def test_no_progress_bar_outside_a_terminal():
    # pytest captures stdout: not a terminal, so no cursor codes in a log.
    assert not shows_progress(1) and not shows_progress(0)


def test_logger_writes_every_term_at_its_interval_from_the_resumed_step(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    logger = TrainingLogger(writer, "universal", step_offset=100, log_every=2, images_per_step=8,
                            total_steps=6, verbose=1, first_step=2)
    logger.on_train_begin()
    for batch in range(4):  # Steps 3..6.
        logger.on_train_batch_end(batch, {"loss": 1.0 + batch, "supervised/a": 0.5})
    writer.flush()
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    steps = [e.step for e in events.Tensors("universal/loss")]
    assert steps == [104, 106]  # offset + stage steps 4 and 6
    assert [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("universal/loss")] == [2.0, 4.0]
    assert "universal/supervised/a" in events.Tags()["tensors"]
    assert "universal/images_per_second" in events.Tags()["tensors"]
    assert logger.last_logs["loss"] == 4.0
