"""Small building blocks shared by the backbones."""

import keras


def make_divisible(channels, width, minimum=8):
    """Scales a channel count by ``width``, rounding to a multiple of 4 (>= ``minimum``)."""
    return max(minimum, int(round(channels * width / 4.0)) * 4)


def batch_norm(sync, name):
    """BatchNorm with PyTorch's momentum; ``sync`` normalises over all replicas.

    Plain BatchNorm under ``MirroredStrategy`` normalises each replica's slice
    of the batch; the synchronized form makes a multi-replica step equal a
    single-device step on the same global batch.
    """
    return keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, synchronized=sync, name=name
    )
