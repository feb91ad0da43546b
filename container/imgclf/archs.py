"""The architectures ``arch`` accepts, one entry each; each downsamples by 32, as train's batch check assumes.
No torch here: the launchers import it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    weights: str  # the torchvision ImageNet weights (file name, evaluation resize and interpolation)
    head: str  # the classifier's last Linear: built for the job's classes, all that freeze-backbone trains
    activations: str  # smdebug include_regex of the activation inputs PoorWeightInitialization reads


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
