"""usss-tf: Universal Semi-Supervised Semantic Segmentation (Kalluri et al., ICCV 2019).

One segmentation model with a shared encoder and a decoder per domain, trained
on a few labelled and many unlabelled images of every domain, exported for
TensorFlow Serving. The library API is importable without TensorFlow side
effects; heavy modules load on first use.
"""

__version__ = "0.1.0"
