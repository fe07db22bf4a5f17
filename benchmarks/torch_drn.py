"""DRN-D in PyTorch, written from the published architecture (Yu et al., ``drn.py``).

The reference the Keras DRN is checked against (``tests/model/fixtures/
make_drn_fixtures.py``) and the peer of ``benchmarks/train_step_torch.py``.
Module paths, hence state-dict keys, are the official ones
(``layer0.0.weight``, ``layer3.0.downsample.0.weight``, ``fc.weight``...).
Needs PyTorch; nothing in the package imports this file.
"""

import torch
from torch import nn

CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
VARIANTS = {
    "drn_d_22": ("basic", (1, 1, 2, 2, 2, 2, 1, 1)),
    "drn_d_38": ("basic", (1, 1, 3, 4, 6, 3, 1, 1)),
    "drn_d_54": ("bottleneck", (1, 1, 3, 4, 6, 3, 1, 1)),
    "drn_d_105": ("bottleneck", (1, 1, 3, 4, 23, 3, 1, 1)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=(1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation[0],
                               dilation=dilation[0], bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation[1],
                               dilation=dilation[1], bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=(1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation[1],
                               dilation=dilation[1], bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class DRND(nn.Module):
    """DRN-D feature extractor (stride 8), with the ImageNet head ``fc`` if ``num_classes``."""

    def __init__(self, variant="drn_d_22", channels=CHANNELS, num_classes=1000):
        super().__init__()
        block_name, layers = VARIANTS[variant]
        block = BasicBlock if block_name == "basic" else Bottleneck
        self.inplanes = channels[0]
        self.layer0 = nn.Sequential(
            nn.Conv2d(3, channels[0], 7, 1, padding=3, bias=False),
            nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))
        self.layer1 = self._conv_layers(channels[0], layers[0], stride=1)
        self.layer2 = self._conv_layers(channels[1], layers[1], stride=2)
        self.layer3 = self._layer(block, channels[2], layers[2], stride=2)
        self.layer4 = self._layer(block, channels[3], layers[3], stride=2)
        self.layer5 = self._layer(block, channels[4], layers[4], dilation=2, new_level=False)
        self.layer6 = self._layer(block, channels[5], layers[5], dilation=4, new_level=False)
        self.layer7 = self._conv_layers(channels[6], layers[6], dilation=2)
        self.layer8 = self._conv_layers(channels[7], layers[7], dilation=1)
        if num_classes:  # The ImageNet head: in the checkpoints, unused for segmentation.
            self.fc = nn.Conv2d(channels[7], num_classes, 1, bias=True)

    def _layer(self, block, planes, blocks, stride=1, dilation=1, new_level=True):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        first = (1, 1) if dilation == 1 else (dilation // 2 if new_level else dilation, dilation)
        layers = [block(self.inplanes, planes, stride, downsample, dilation=first)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=(dilation, dilation))
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _conv_layers(self, channels, convs, stride=1, dilation=1):
        modules = []
        for i in range(convs):
            modules += [
                nn.Conv2d(self.inplanes, channels, 3, stride if i == 0 else 1,
                          padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            self.inplanes = channels
        return nn.Sequential(*modules)

    def forward(self, x):
        for i in range(9):
            x = getattr(self, f"layer{i}")(x)
        return x


def calibrate(model, generator, steps=3, size=(64, 96)):
    """Random affine BatchNorm weights and running statistics measured on random images.

    The statistics are what train mode sees on ImageNet-normalised noise, so
    every layer's output keeps unit scale and carries signal (zero-mean,
    unit-variance defaults would blow activations up or leave them dead).
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # Cumulative average over the calibration steps.
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(4, 3, *size, generator=generator))
    model.eval()
    return model


def width_channels(width):
    """The Keras DRN's channels at ``width`` (usss_tf.model.layers.make_divisible)."""
    return tuple(max(8, int(round(c * width / 4.0)) * 4) for c in CHANNELS)
