"""An independent, functional ConvMLP forward written from the paper and the official
code's structure, reading only a state dict. The model package must agree with it
to float32 rounding; it shares no code with ``convmlp/``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS_BN = 1e-5
EPS_LN = 1e-5


def _bn(x, sd, p):
    return F.batch_norm(
        x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, EPS_BN
    )


def _ln(x, sd, p):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], EPS_LN)


def _mlp(x, sd, p):
    h = F.linear(x, sd[p + ".fc1.weight"], sd[p + ".fc1.bias"])
    h = 0.5 * h * (1.0 + torch.erf(h / 2**0.5))  # exact GELU, written out
    return F.linear(h, sd[p + ".fc2.weight"], sd[p + ".fc2.bias"])


def _n_indexed(sd, prefix):
    idx = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(idx) + 1 if idx else 0


def forward(sd: dict[str, torch.Tensor], x: torch.Tensor, *, features: bool = False):
    """Logits (or F1..F4) of the ConvMLP described by ``sd`` (any variant)."""
    # tokenizer: conv(s2)-bn-relu, conv-bn-relu, conv-bn-relu, maxpool 3/2/1
    x = F.relu(_bn(F.conv2d(x, sd["tokenizer.block.0.weight"], stride=2, padding=1), sd, "tokenizer.block.1"))
    x = F.relu(_bn(F.conv2d(x, sd["tokenizer.block.3.weight"], padding=1), sd, "tokenizer.block.4"))
    x = F.relu(_bn(F.conv2d(x, sd["tokenizer.block.6.weight"], padding=1), sd, "tokenizer.block.7"))
    f1 = F.max_pool2d(x, 3, 2, 1)
    # conv stage: residual bottlenecks, then a strided conv with bias
    x = f1
    for i in range(_n_indexed(sd, "conv_stages.conv_blocks.")):
        p = f"conv_stages.conv_blocks.{i}."
        h = F.relu(_bn(F.conv2d(x, sd[p + "0.weight"]), sd, p + "1"))
        h = F.relu(_bn(F.conv2d(h, sd[p + "3.weight"], padding=1), sd, p + "4"))
        h = F.relu(_bn(F.conv2d(h, sd[p + "6.weight"]), sd, p + "7"))
        x = x + h
    f2 = F.conv2d(x, sd["conv_stages.downsample.weight"], sd["conv_stages.downsample.bias"], stride=2, padding=1)
    # Conv-MLP stages in NHWC
    x = f2.permute(0, 2, 3, 1)
    outs = []
    for s in range(_n_indexed(sd, "stages.")):
        for b in range(_n_indexed(sd, f"stages.{s}.blocks.")):
            p = f"stages.{s}.blocks.{b}."
            x = x + _mlp(_ln(x, sd, p + "norm1"), sd, p + "channel_mlp1")
            y = _ln(x, sd, p + "connect_norm").permute(0, 3, 1, 2)
            y = F.conv2d(y, sd[p + "connect.weight"], padding=1, groups=y.shape[1])
            x = y.permute(0, 2, 3, 1)
            x = x + _mlp(_ln(x, sd, p + "norm2"), sd, p + "channel_mlp2")
        dk = f"stages.{s}.downsample_mlp.downsample."
        if dk + "weight" in sd:
            y = F.conv2d(x.permute(0, 3, 1, 2), sd[dk + "weight"], sd[dk + "bias"], stride=2, padding=1)
            x = y.permute(0, 2, 3, 1)
        outs.append(x.permute(0, 3, 1, 2))
    if features:
        return f1, f2, outs[0], outs[2]
    x = _ln(x.reshape(x.shape[0], -1, x.shape[-1]), sd, "norm").mean(dim=1)
    return F.linear(x, sd["head.weight"], sd["head.bias"])
