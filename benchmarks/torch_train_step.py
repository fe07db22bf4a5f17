"""The peer of ``train_step.py`` in PyTorch: the same universal training step, timed the same way.

    python benchmarks/torch_train_step.py --backbone drn_d_22 --batch 2 --size 128x256 [--threads 2]
    python benchmarks/torch_train_step.py --device cuda --precision mixed_float16 --batch 16

Needs PyTorch (not a dependency of the package; ``compare_torch.py`` runs this
file with a Python that has it). Written from the published architectures
(``torch_drn.py``, ERFNet below) and this project's method: per domain, a
labelled and an unlabelled batch go through the encoder in one pass; a 1x1
decoder per domain, bilinear upsampling, masked cross-entropy; a 1x1
embedding head (L2-normalised), K centroids per class, similarity logits
max_k <e, M[c, k]> / tau; embedding supervision, within- and cross-domain
entropy with the paper's weights (1, 1, 0.1, 0.1); AdamW (lr 1e-3,
weight decay 4e-3 as Keras' default). The batch is constant in memory; the
first call is reported apart, the steady state is the median of the next
``--steps`` calls. JSON out. On a GPU (``--device cuda``) each timed step
ends with a device synchronisation, and the step's floating-point operations
(``torch.utils.flop_counter``, forward and backward) give the achieved
TFLOP/s, to read against the chip's peak as MFU.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from machine_info import cpu_model  # noqa: E402
from torch_drn import DRND, VARIANTS, width_channels  # noqa: E402

DOMAINS = {"synth_city": 10, "synth_camvid": 7}
WEIGHTS = {"supervised": 1.0, "embedding_supervision": 1.0, "within_entropy": 0.1, "cross_entropy": 0.1}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def _divisible(channels, width):
    return max(8, int(round(channels * width / 4.0)) * 4)


class Downsampler(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout - cin, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1D(nn.Module):
    def __init__(self, channels, dilation):
        super().__init__()
        self.conv0a = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))
        self.conv0b = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.bn0 = nn.BatchNorm2d(channels)
        self.conv1a = nn.Conv2d(channels, channels, (3, 1), padding=(dilation, 0), dilation=(dilation, 1))
        self.conv1b = nn.Conv2d(channels, channels, (1, 3), padding=(0, dilation), dilation=(1, dilation))
        self.bn1 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = F.relu(self.bn0(self.conv0b(F.relu(self.conv0a(x)))))
        y = self.bn1(self.conv1b(F.relu(self.conv1a(y))))
        return F.relu(y + x)


class ERFNetEncoder(nn.Module):
    """ERFNet's encoder as ``usss_tf/model/erfnet.py`` builds it (stride 8)."""

    def __init__(self, width=1.0):
        super().__init__()
        c16, c64, c128 = (_divisible(c, width) for c in (16, 64, 128))
        c64 = max(c64, 2 * c16)
        c128 = max(c128, 2 * c64)
        layers = [Downsampler(3, c16), Downsampler(c16, c64)]
        layers += [NonBottleneck1D(c64, 1) for _ in range(5)]
        layers += [Downsampler(c64, c128)]
        layers += [NonBottleneck1D(c128, rate) for rate in (2, 4, 8, 16, 2, 4, 8, 16)]
        self.layers = nn.Sequential(*layers)
        self.out_channels = c128

    def forward(self, x):
        return self.layers(x)


class Segmenter(nn.Module):
    def __init__(self, backbone, width=1.0, embedding_dim=64, centroids_per_class=3, temperature=0.1):
        super().__init__()
        if backbone == "erfnet":
            self.encoder = ERFNetEncoder(width)
            features = self.encoder.out_channels
        else:
            channels = width_channels(width)
            self.encoder = DRND(backbone, channels=channels, num_classes=0)
            features = channels[7]
        self.decoders = nn.ModuleDict({d: nn.Conv2d(features, c, 1) for d, c in DOMAINS.items()})
        self.embedding = nn.Conv2d(features, embedding_dim, 1)
        self.temperature = temperature
        for d, c in DOMAINS.items():
            centroids = F.normalize(torch.randn(c, centroids_per_class, embedding_dim), dim=-1)
            self.register_buffer(f"centroids_{d}", centroids)

    def similarity(self, embeddings, domain):
        dots = torch.einsum("bdhw,ckd->bckhw", embeddings, getattr(self, f"centroids_{domain}"))
        return dots.amax(dim=2) / self.temperature


def _entropy(logits):
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


def train_step(model, optimizer, batch, scaler=None):
    chunks = []
    for d in DOMAINS:
        chunks += [batch[d]["images"], batch[d]["unlabeled"]]
    sizes = [c.shape[0] for c in chunks]
    images = torch.cat(chunks)
    mean, std = MEAN.to(images.device), STD.to(images.device)
    features = torch.split(model.encoder((images - mean) / std), sizes)
    embeddings = torch.split(F.normalize(model.embedding(torch.cat(features)), dim=1, eps=1e-6), sizes)
    total = 0.0
    for i, d in enumerate(DOMAINS):
        labels = batch[d]["labels"]
        size = labels.shape[1:]
        logits = F.interpolate(model.decoders[d](features[2 * i]), size, mode="bilinear", align_corners=False)
        total = total + WEIGHTS["supervised"] * F.cross_entropy(logits, labels, ignore_index=255)
        sim = F.interpolate(model.similarity(embeddings[2 * i], d), size, mode="bilinear", align_corners=False)
        total = total + WEIGHTS["embedding_supervision"] * F.cross_entropy(sim, labels, ignore_index=255)
        unlabeled = embeddings[2 * i + 1]
        total = total + WEIGHTS["within_entropy"] * _entropy(model.similarity(unlabeled, d))
        others = [o for o in DOMAINS if o != d]
        cross = sum(_entropy(model.similarity(unlabeled, o)) for o in others) / len(others)
        total = total + WEIGHTS["cross_entropy"] * cross
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        optimizer.step()
    return total.detach()


AUTOCAST = {"float32": None, "mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}


def make_step(backbone, batch, size, width=1.0, channels_last=False, precision="float32", device="cpu"):
    """(model, a function running one training step on a constant batch and returning its loss).

    ``mixed_float16`` scales the loss (``torch.amp.GradScaler``) as Keras'
    LossScaleOptimizer does; the step returns once the device has finished it.
    """
    torch.manual_seed(0)
    model = Segmenter(backbone, width).train().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=4e-3)
    rng = np.random.default_rng(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    data = {}
    for d, classes in DOMAINS.items():
        data[d] = {
            "images": torch.tensor(rng.uniform(0, 255, (batch, 3, *size)), dtype=torch.float32,
                                   device=device).contiguous(memory_format=memory),
            "unlabeled": torch.tensor(rng.uniform(0, 255, (batch, 3, *size)), dtype=torch.float32,
                                      device=device).contiguous(memory_format=memory),
            "labels": torch.tensor(rng.integers(0, classes, (batch, *size)), dtype=torch.long, device=device),
        }
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    dtype = AUTOCAST[precision]
    device_type = torch.device(device).type  # "cuda" for "cuda:1": what autocast and the scaler take
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "mixed_float16")

    def step():
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return float(train_step(model, optimizer, data, scaler))  # float(): waits for the device

    return model, step


def timed(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start



def step_flops(step):
    """Floating-point operations of one training step (forward and backward), as PyTorch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure(backbone, batch, size, width=1.0, steps=10, channels_last=False, precision="float32",
            device="cpu"):
    model, step = make_step(backbone, batch, size, width, channels_last, precision, device)
    first = timed(step)
    times = [timed(step) for _ in range(steps)]
    images = len(DOMAINS) * batch * 2
    median = float(np.median(times))
    flops = step_flops(step)
    return {
        "backbone": backbone, "width": width, "batch_per_stream": batch, "size": list(size),
        "losses": "all", "precision": precision, "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else cpu_model(),
        "channels_last": channels_last, "step_tflop": round(flops / 1e12, 4),
        "achieved_tflops": round(flops / median / 1e12, 2),
        "parameters": int(sum(p.numel() for p in model.parameters())), "images_per_step": images,
        "first_step_seconds": round(first, 2), "step_seconds_median": round(median, 4),
        "step_seconds_min": round(float(np.min(times)), 4),
        "images_per_second": round(images / median, 2), "steps": steps,
    }


def serve_steps(backbone, batch, size, width, channels_last, precision):
    """Step on request: one line on stdout per line on stdin (``compare_torch.py --interleave``).

    Prints ``{"ready": first_step_seconds, "parameters": ...}`` once built and
    warmed up, then for every ``step`` line read, runs one step and prints
    its seconds; ends at end of input.
    """
    model, step = make_step(backbone, batch, size, width, channels_last, precision)
    first = timed(step)
    print(json.dumps({"ready": round(first, 2), "torch": torch.__version__,
                      "parameters": int(sum(p.numel() for p in model.parameters()))}), flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            print(timed(step), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", action="append", default=None,
                        help=f"repeatable: erfnet, {', '.join(VARIANTS)}; default erfnet and drn_d_22")
    parser.add_argument("--batch", type=int, default=2, help="images per stream per domain")
    parser.add_argument("--size", default="128x256")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--precision", default="float32", choices=tuple(AUTOCAST))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (a GPU) to time the step there")
    parser.add_argument("--serve-steps", action="store_true",
                        help="one backbone; run a step per 'step' line on stdin (compare_torch.py)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.split("x"))
    if args.serve_steps:
        serve_steps((args.backbone or ["drn_d_22"])[0], args.batch, size, args.width,
                    args.channels_last, args.precision)
        return
    results = [measure(b, args.batch, size, args.width, args.steps, args.channels_last, args.precision,
                       args.device)
               for b in (args.backbone or ["erfnet", "drn_d_22"])]
    print(json.dumps({"benchmark": "torch_train_step", "torch": torch.__version__,
                      "threads": args.threads, "machine": platform.machine(), "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
