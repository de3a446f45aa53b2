"""Plain-torch image classifiers, structurally faithful to torchvision (no torchvision import).

Module and parameter names follow torchvision, so a torchvision ``state_dict`` of the full-size models
loads with ``model.load_state_dict(sd)``. Every family takes width/depth arguments; the ``*_tiny``
registry entries (plus ``convnext_tiny_test``) are 8k-33k parameters (10 classes) and run at 32x32.

Registry (``ARCHITECTURES``; build with ``build(name, num_classes=1000, softmax_head=False, **kw)``):

=====================  =========================================================================
resnet18, resnet50     BasicBlock / Bottleneck ResNets
vgg16_bn               VGG-16 with BatchNorm
mobilenet_v2           inverted residuals, depthwise convs, ReLU6
densenet121            dense blocks (Concat), BN-ReLU-Conv, AveragePool transitions
efficientnet_b0        MBConv: SiLU, depthwise, squeeze-excitation
convnext_tiny          depthwise 7x7, channels-last LayerNorm (permute), GELU, layer scale
vit_b_16               patch conv, class token, pos. embedding, pre-norm, explicit attention
resnet_tiny            BasicBlock ResNet, widths 8-32, one block per stage         (~33k params)
resnet_bottleneck_tiny Bottleneck ResNet, widths 4-16 (x4 expansion)               (~15k params)
vgg_tiny               VGG-BN, 5 convs, 4 max-pools, 2x2 adaptive pool, 64-wide MLP (~30k params)
mobilenetv2_tiny       3 inverted-residual stages, last channel 64                  (~8k params)
densenet_tiny          2 dense blocks of 2 layers, growth 8, one transition         (~8k params)
efficientnet_tiny      3 MBConv stages (k3, k5) with SE, last channel 64           (~13k params)
convnext_tiny_test     ConvNeXt, dims 8-32, patch-2 stem, layer scale 0.5          (~32k params)
vit_tiny               ViT, patch 8 at 32x32, dim 32, 2 layers, 4 heads, MLP 64    (~24k params)
=====================  =========================================================================

``softmax_head=True`` wraps the classifier in :class:`SoftmaxHead` (outputs probabilities; load a
state_dict into ``wrapper.model``). Untrained nets in eval mode have identity BatchNorm, so deep ones
vanish or explode; :func:`calibrate_norms_` gives them realistic norm statistics for tests.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` (the torchvision/TF rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _init_convs(model: nn.Module) -> None:
    """torchvision-style init (kaiming-normal fan-out convs): keeps deep nets' activations from vanishing."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvNormAct(nn.Sequential):
    """Conv2d + norm + activation, indexed 0/1/2 like torchvision's ``Conv2dNormActivation``."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, padding=None, groups=1,
                 norm_layer: Callable | None = nn.BatchNorm2d, activation: Callable | None = nn.ReLU,
                 bias: bool | None = None):
        if padding is None:
            padding = (kernel_size - 1) // 2
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(cout))
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


# ----------------------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet V1.5 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block=BasicBlock, layers: Sequence[int] = (2, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512), num_classes=1000):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (n, w) in enumerate(zip(layers, widths)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, w, n, stride=1 if i == 0 else 2))
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1] * block.expansion, num_classes)
        _init_convs(self)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -------------------------------------------------------------------------------------------------- VGG
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """VGG with BatchNorm; ``cfg`` lists conv widths and ``"M"`` max-pools (torchvision's layout)."""

    def __init__(self, cfg: Sequence = VGG16_CFG, num_classes=1000, pool_size=7, hidden=4096, dropout=0.5):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(cin * pool_size * pool_size, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        _init_convs(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------------------------------- MobileNetV2
MOBILENETV2_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                       [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]  # t, c, n, s


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(inp, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0, setting=MOBILENETV2_SETTING,
                 stem_channels=32, last_channel=1280, dropout=0.2, round_nearest=8):
        super().__init__()
        cin = _make_divisible(stem_channels * width_mult, round_nearest)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvNormAct(3, cin, 3, 2, activation=nn.ReLU6)]
        for t, c, n, s in setting:
            cout = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvNormAct(cin, self.last_channel, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        _init_convs(self)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ------------------------------------------------------------------------------------------- DenseNet
class _DenseLayer(nn.Module):
    def __init__(self, num_input_features, growth_rate, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]):
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, num_input_features, bn_size, growth_rate):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    def __init__(self, growth_rate=32, block_config: Sequence[int] = (6, 12, 24, 16), num_init_features=64,
                 bn_size=4, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU()),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]))
        c = num_init_features
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(n, c, bn_size, growth_rate))
            c += n * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)
        _init_convs(self)

    def forward(self, x):
        x = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1))


# --------------------------------------------------------------------------------------- EfficientNet
EFFICIENTNET_B0_SETTING = [  # expand_ratio, kernel, stride, in, out, layers
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
]


class SqueezeExcitation(nn.Module):
    def __init__(self, cin, csq, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(cin, csq, 1)
        self.fc2 = nn.Conv2d(csq, cin, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class MBConv(nn.Module):
    def __init__(self, expand_ratio, kernel, stride, cin, cout):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        cexp = _make_divisible(cin * expand_ratio, 8)
        layers: list[nn.Module] = []
        if cexp != cin:
            layers.append(ConvNormAct(cin, cexp, 1, activation=nn.SiLU))
        layers += [
            ConvNormAct(cexp, cexp, kernel, stride, groups=cexp, activation=nn.SiLU),
            SqueezeExcitation(cexp, max(1, cin // 4), activation=partial(nn.SiLU, inplace=False)),
            ConvNormAct(cexp, cout, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        out = self.block(x)  # stochastic depth is the identity in eval mode
        return out + x if self.use_res_connect else out


class EfficientNet(nn.Module):
    def __init__(self, setting=EFFICIENTNET_B0_SETTING, width_mult=1.0, depth_mult=1.0, num_classes=1000,
                 dropout=0.2, last_channel: int | None = None):
        super().__init__()
        adj = lambda c: _make_divisible(c * width_mult, 8)  # noqa: E731
        cstem = adj(setting[0][3])
        layers: list[nn.Module] = [ConvNormAct(3, cstem, 3, 2, activation=nn.SiLU)]
        for e, k, s, cin, cout, n in setting:
            cin, cout = adj(cin), adj(cout)
            stage = [MBConv(e, k, s if i == 0 else 1, cin if i == 0 else cout, cout)
                     for i in range(int(math.ceil(n * depth_mult)))]
            layers.append(nn.Sequential(*stage))
        clast_in = adj(setting[-1][4])
        clast = last_channel or 4 * clast_in
        layers.append(ConvNormAct(clast_in, clast, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(clast, num_classes))
        _init_convs(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ------------------------------------------------------------------------------------------- ConvNeXt
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor (permute to channels-last and back)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x):
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim, layer_scale: float):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x):
        return self.layer_scale * self.block(x) + x  # stochastic depth is the identity in eval mode


class ConvNeXt(nn.Module):
    def __init__(self, dims: Sequence[int] = (96, 192, 384, 768), depths: Sequence[int] = (3, 3, 9, 3),
                 num_classes=1000, layer_scale=1e-6, stem_patch=4):
        super().__init__()
        norm = partial(LayerNorm2d, eps=1e-6)
        layers: list[nn.Module] = [ConvNormAct(3, dims[0], stem_patch, stem_patch, padding=0, norm_layer=norm,
                                               activation=None, bias=True)]
        for i, (d, n) in enumerate(zip(dims, depths)):
            layers.append(nn.Sequential(*[CNBlock(d, layer_scale) for _ in range(n)]))
            if i + 1 < len(dims):
                layers.append(nn.Sequential(norm(d), nn.Conv2d(d, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(norm(dims[-1]), nn.Flatten(1), nn.Linear(dims[-1], num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


# ------------------------------------------------------------------------------------------------ ViT
class MultiheadSelfAttention(nn.Module):
    """Self-attention with explicit MatMul/Softmax; parameter names of ``nn.MultiheadAttention``."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x):
        n, s, d = x.shape
        h = self.num_heads
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(n, s, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3, N, H, S, Dh
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (d // h) ** -0.5, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(n, s, d)
        return self.out_proj(out)


class EncoderBlock(nn.Module):
    def __init__(self, num_heads, hidden_dim, mlp_dim, dropout=0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.self_attention = MultiheadSelfAttention(hidden_dim, num_heads)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, hidden_dim), nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.dropout(self.self_attention(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout=0.0):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout)) for i in range(num_layers)
        ))
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, x):
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    def __init__(self, image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768,
                 mlp_dim=3072, num_classes=1000, dropout=0.0):
        super().__init__()
        self.patch_size, self.hidden_dim = patch_size, hidden_dim
        self.conv_proj = nn.Conv2d(3, hidden_dim, patch_size, patch_size)
        self.class_token = nn.Parameter(torch.empty(1, 1, hidden_dim).normal_(std=0.02))
        seq_length = (image_size // patch_size) ** 2 + 1
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout)
        self.heads = nn.Sequential(OrderedDict([("head", nn.Linear(hidden_dim, num_classes))]))

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x)
        x = x.reshape(n, self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.encoder(x)
        return self.heads(x[:, 0])


# --------------------------------------------------------------------------------- bundled small models
class DigitsCNN(nn.Module):
    """conv-BN-ReLU-maxpool x2, conv-ReLU, global average pool, linear, for 1x32x32 digits."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------------------------- heads
class SoftmaxHead(nn.Module):
    """Wrap a classifier so that it outputs probabilities (Softmax over the class axis)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), dim=-1)


# ------------------------------------------------------------------------------------------ registry
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": partial(ResNet, BasicBlock, (2, 2, 2, 2)),
    "resnet50": partial(ResNet, Bottleneck, (3, 4, 6, 3)),
    "vgg16_bn": partial(VGG, VGG16_CFG),
    "mobilenet_v2": MobileNetV2,
    "densenet121": DenseNet,
    "efficientnet_b0": EfficientNet,
    "convnext_tiny": ConvNeXt,
    "vit_b_16": VisionTransformer,
    # the bundled trained models (export_scripts/train.py)
    "digits_cnn": DigitsCNN,
    "shapes_resnet": partial(ResNet, BasicBlock, (1, 1, 1, 1), (16, 32, 64, 128)),
    "shapes_vgg": partial(VGG, [16, "M", 32, "M", 64, 64, "M", 128, 128, "M"], pool_size=1, hidden=128,
                          dropout=0.2),
    "shapes_vit": partial(VisionTransformer, image_size=64, patch_size=8, num_layers=4, num_heads=4,
                          hidden_dim=96, mlp_dim=192),
    # tiny variants for 32x32 inputs
    "resnet_tiny": partial(ResNet, BasicBlock, (1, 1, 1, 1), (8, 16, 24, 32)),
    "resnet_bottleneck_tiny": partial(ResNet, Bottleneck, (1, 1, 1, 1), (4, 8, 12, 16)),
    "vgg_tiny": partial(VGG, [8, "M", 16, "M", 24, 24, "M", 32, "M"], pool_size=2, hidden=64),
    "mobilenetv2_tiny": partial(MobileNetV2, setting=[[1, 8, 1, 1], [4, 8, 2, 2], [4, 16, 2, 2]],
                                stem_channels=8, last_channel=64),
    "densenet_tiny": partial(DenseNet, growth_rate=8, block_config=(2, 2), num_init_features=8, bn_size=2),
    "efficientnet_tiny": partial(EfficientNet, [(1, 3, 1, 8, 8, 1), (4, 3, 2, 8, 16, 2), (4, 5, 2, 16, 24, 1)],
                                 last_channel=64),
    "convnext_tiny_test": partial(ConvNeXt, (8, 16, 24, 32), (1, 1, 2, 1), layer_scale=0.5, stem_patch=2),
    "vit_tiny": partial(VisionTransformer, image_size=32, patch_size=8, num_layers=2, num_heads=4,
                        hidden_dim=32, mlp_dim=64),
}

TINY_ARCHITECTURES: tuple[str, ...] = (
    "resnet_tiny", "resnet_bottleneck_tiny", "vgg_tiny", "mobilenetv2_tiny", "densenet_tiny",
    "efficientnet_tiny", "convnext_tiny_test", "vit_tiny",
)


def build(name: str, num_classes: int = 1000, softmax_head: bool = False, **kwargs) -> nn.Module:
    """Instantiate ``ARCHITECTURES[name]`` (in eval mode), optionally wrapped in :class:`SoftmaxHead`."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    model = ARCHITECTURES[name](num_classes=num_classes, **kwargs)
    return (SoftmaxHead(model) if softmax_head else model).eval()


@torch.no_grad()
def calibrate_norms_(model: nn.Module, input_size=(3, 32, 32), seed: int = 0, batch: int = 16) -> nn.Module:
    """Make an untrained model behave like a trained one, for tests: random affine norm parameters, then
    BatchNorm running statistics measured on random N(0, 1) inputs (so eval-mode BN really normalizes
    and deep nets neither vanish nor explode). Returns ``model`` in eval mode."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
            m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.eval()
    for m in bns:
        m.train()
    for _ in range(2):
        model(torch.randn(batch, *input_size, generator=g))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return model.eval()
