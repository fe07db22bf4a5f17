"""Which machine measured a figure: shared by the benchmarks, ours and the PyTorch peer (no
TensorFlow or PyTorch imported here)."""

import platform


def cpu_model():
    """The CPU's model name as /proc/cpuinfo gives it (``platform.processor()`` is empty on Linux)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
