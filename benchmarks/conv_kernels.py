"""How fast this CPU runs the convolutions of a DRN-D training step: GFLOP/s per kernel; JSON out.

    python benchmarks/conv_kernels.py --batch 8 --size 128x256 --out conv_kernels.json

A DRN-D step is mostly 3x3 convolutions (``train_step.py --profile`` names the
ops). For each distinct 3x3 convolution shape of DRN-D-22's stages at the given
input size (channels, stride-8 spatial size, dilation), this times TensorFlow's
native kernels on random data: the forward convolution, the input gradient
(``Conv2DBackpropInput``) and the filter gradient (``Conv2DBackpropFilter``),
each as a traced function, median of ``--repeats`` calls, and reports
milliseconds and achieved GFLOP/s (2 x multiply-adds). Compared with the CPU's
FMA peak (cores x FMA units x vector lanes x 2 x clock, from the vendor's data)
it says how much any implementation of the same layers could still gain.
"""

import argparse
import statistics
import sys
import pathlib
import time

import tensorflow as tf

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_step import machine, write_report  # noqa: E402

# DRN-D-22's 3x3 convolutions (width 1.0): (channels, output stride, dilation).
# Stages 1-2 (16 and 32 channels at strides 1 and 2) are small and left out.
DRN_D_22 = ((64, 4, 1), (128, 8, 1), (256, 8, 2), (512, 8, 4), (512, 8, 2), (512, 8, 1))


def _significant(value, digits=4):
    """``value`` to ``digits`` significant digits (tiny smoke-test shapes stay above 0)."""
    return float(f"{value:.{digits}g}")


def _median_ms(function, repeats):
    function()  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function().numpy()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(batch, height, width, channels, stride, dilation, repeats, width_multiplier=1.0):
    """Milliseconds and GFLOP/s of one 3x3 convolution shape's three kernels."""
    c = max(1, int(channels * width_multiplier))
    h, w = height // stride, width // stride
    pad = dilation
    x = tf.random.normal([batch, h + 2 * pad, w + 2 * pad, c])
    kernel = tf.random.normal([3, 3, c, c])
    dy = tf.random.normal([batch, h, w, c])
    dilations = [1, dilation, dilation, 1]
    kernels = {
        "forward": tf.function(lambda: tf.nn.conv2d(x, kernel, 1, "VALID", dilations=dilation)),
        "input_gradient": tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=[1, 1, 1, 1],
            padding="VALID", dilations=dilations)),
        "filter_gradient": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=[3, 3, c, c], out_backprop=dy, strides=[1, 1, 1, 1],
            padding="VALID", dilations=dilations)),
    }
    gflop = 2 * batch * h * w * 9 * c * c / 1e9
    result = {"channels": c, "spatial": [h, w], "dilation": dilation, "gflop": _significant(gflop)}
    for name, function in kernels.items():
        try:
            ms = _median_ms(function, repeats)
        except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError) as error:
            # Without oneDNN the CPU kernels refuse dilation > 1 (usss_tf.model.layers falls back).
            result[f"{name}_ms"] = result[f"{name}_gflops"] = None
            result[f"{name}_error"] = error.message.splitlines()[0]
            continue
        result[f"{name}_ms"] = _significant(ms)
        result[f"{name}_gflops"] = _significant(gflop / (ms / 1000))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per step (2 domains x 4 in the peer benchmark)")
    parser.add_argument("--size", default="128x256")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    results = [measure(args.batch, height, width, channels, stride, dilation, args.repeats, args.width)
               for channels, stride, dilation in DRN_D_22]
    write_report({
        "benchmark": "conv_kernels", "machine": machine(), "tensorflow": tf.__version__,
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "batch": args.batch, "size": [height, width], "width": args.width, "repeats": args.repeats,
        "results": results,
    }, args.out)


if __name__ == "__main__":
    main()
