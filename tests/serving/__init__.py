"""Tests of usss_tf.serving (a package, so its conftest does not shadow tests/conftest.py)."""
