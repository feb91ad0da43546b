"""The architectures ``arch`` accepts, one entry each, read by the model, evaluation, the freeze rule
and the launchers' Debugger collection. ``weights``: the torchvision ImageNet weights the
``pretrained`` channel supplies (their file name, evaluation resize and interpolation come from
torchvision). ``head``: the classifier's last Linear, built for the job's classes; freeze-backbone
trains only it. ``activations``: the smdebug include_regex (module name + ``_input_N``) of the
activation inputs PoorWeightInitialization reads. Each downsamples by 32, as train's batch check
assumes. No torch here: the launchers import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    weights: str
    head: str
    activations: str


RESNET = ("fc", r".*relu_input")
CONVNEXT = ("classifier.2", r".*block\.4_input")  # the GELU of each block
EFFICIENTNET = ("classifier.1", r".*block\.0\.2_input")  # the SiLU of each block's first convolution
REGNET = ("fc", r".*block\d+-\d+\.activation_input")  # the ReLU that ends each block

ARCHS = {
    "resnet18": Arch("ResNet18_Weights.IMAGENET1K_V1", *RESNET),
    "resnet34": Arch("ResNet34_Weights.IMAGENET1K_V1", *RESNET),
    "resnet50": Arch("ResNet50_Weights.IMAGENET1K_V2", *RESNET),
    "resnet101": Arch("ResNet101_Weights.IMAGENET1K_V2", *RESNET),
    "resnet152": Arch("ResNet152_Weights.IMAGENET1K_V2", *RESNET),
    "convnext_tiny": Arch("ConvNeXt_Tiny_Weights.IMAGENET1K_V1", *CONVNEXT),
    "convnext_small": Arch("ConvNeXt_Small_Weights.IMAGENET1K_V1", *CONVNEXT),
    "efficientnet_v2_s": Arch("EfficientNet_V2_S_Weights.IMAGENET1K_V1", *EFFICIENTNET),
    "efficientnet_v2_m": Arch("EfficientNet_V2_M_Weights.IMAGENET1K_V1", *EFFICIENTNET),
    "regnet_y_3_2gf": Arch("RegNet_Y_3_2GF_Weights.IMAGENET1K_V2", *REGNET),
    "regnet_y_16gf": Arch("RegNet_Y_16GF_Weights.IMAGENET1K_V2", *REGNET),
}
