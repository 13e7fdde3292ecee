"""FasterNet-style partial convolution used at the start of every FRFN feed-forward.

Op contract (``ast::PartialConv``)::

    y = PartialConv(x, weight)

    x       [B, H, W, C]   channels-last, the layout the transformer blocks keep their tokens in
    weight  [Cp, Cp, 3, 3] Cp = C // 4 (taken from the weight), no bias
    y       [B, H, W, C]   y[..., :Cp] = conv3x3(x[..., :Cp], weight, stride 1, zero padding 1)
                           y[..., Cp:] = x[..., Cp:]

Channels-last in and out means the op sits between LayerNorm and a Linear with no transpose around
it; only the decomposition (and a kernel that wants NCHW) pays for one, on a quarter of the channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def partial_conv_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    conv_channels = weight.shape[0]
    head, tail = x[..., :conv_channels], x[..., conv_channels:]
    head = F.conv2d(head.permute(0, 3, 1, 2), weight, padding=1).permute(0, 2, 3, 1)
    return torch.cat((head, tail), dim=-1)
