"""Data: on-disk readers, the synthetic domains and the tf.data pipelines."""
