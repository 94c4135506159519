"""Tiny vision models: classification, detection, segmentation, depth, super-resolution, and the real vision
checkpoints' families."""

from __future__ import annotations

import pathlib
from typing import Any

from tests.tiny_models.common import _labels

IMAGE_LABELS: dict[int, str] = {0: "cat", 1: "dog", 2: "bird"}


DETECTION_LABELS: dict[int, str] = {0: "cat", 1: "dog", 2: "person"}


SEGMENT_LABELS: dict[int, str] = {0: "background", 1: "cat", 2: "dog"}


def _vit_kwargs() -> dict[str, Any]:
    return {
        "image_size": 32,
        "patch_size": 8,
        "num_channels": 3,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }


def _vit_image_processor() -> Any:
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32})


def _build_image_classification(folder: pathlib.Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    _vit_image_processor().save_pretrained(folder)
    config = ViTConfig(**_vit_kwargs(), id2label=IMAGE_LABELS, label2id={v: k for k, v in IMAGE_LABELS.items()})
    ViTForImageClassification(config).save_pretrained(folder)


def _build_object_detection(folder: pathlib.Path) -> None:
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(folder)
    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
    )
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=5,
        id2label=DETECTION_LABELS,
        label2id={v: k for k, v in DETECTION_LABELS.items()},
    )
    DetrForObjectDetection(config).save_pretrained(folder)


def _mix_transformer_kwargs() -> dict[str, Any]:
    """Two tiny stages of SegFormer's / GLPN's hierarchical encoder."""
    return {
        "num_encoder_blocks": 2,
        "depths": [1, 1],
        "sr_ratios": [2, 1],
        "hidden_sizes": [8, 16],
        "patch_sizes": [7, 3],
        "strides": [4, 2],
        "num_attention_heads": [1, 2],
        "mlp_ratios": [2, 2],
    }


def _build_image_segmentation(folder: pathlib.Path) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    config = SegformerConfig(**_mix_transformer_kwargs(), decoder_hidden_size=16, **_labels(SEGMENT_LABELS))
    SegformerForSemanticSegmentation(config).save_pretrained(folder)


def _build_depth_estimation(folder: pathlib.Path) -> None:
    from transformers import GLPNConfig, GLPNForDepthEstimation, GLPNImageProcessor

    GLPNImageProcessor().save_pretrained(folder)
    GLPNForDepthEstimation(GLPNConfig(**_mix_transformer_kwargs(), decoder_hidden_size=8)).save_pretrained(folder)


def _build_image_to_image(folder: pathlib.Path) -> None:
    """A tiny Swin2SR x2 super-resolution model."""
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution, Swin2SRImageProcessor

    Swin2SRImageProcessor(pad_size=8).save_pretrained(folder)
    config = Swin2SRConfig(
        image_size=32,
        patch_size=1,
        embed_dim=8,
        depths=[1],
        num_heads=[2],
        window_size=8,
        mlp_ratio=1.0,
        upscale=2,
        upsampler="pixelshuffledirect",
    )
    Swin2SRForImageSuperResolution(config).save_pretrained(folder)


def _build_resnet(folder: pathlib.Path) -> None:
    """microsoft/resnet-50: ResNetConfig, ConvNextImageProcessor."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(folder)
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck", **_labels(IMAGE_LABELS)
    )
    ResNetForImageClassification(config).save_pretrained(folder)


def _build_yolos(folder: pathlib.Path) -> None:
    """hustvl/yolos-tiny: YolosConfig, YolosImageProcessor."""
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(folder)
    config = YolosConfig(
        image_size=[32, 32],
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_detection_tokens=5,
        **_labels(DETECTION_LABELS),
    )
    YolosForObjectDetection(config).save_pretrained(folder)


def _build_depth_anything(folder: pathlib.Path) -> None:
    """depth-anything/Depth-Anything-V2-Small-hf: DepthAnythingConfig (a DINOv2 backbone), DPTImageProcessor."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    DPTImageProcessor(
        size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14, do_pad=False
    ).save_pretrained(folder)
    backbone = Dinov2Config(
        image_size=28,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_ratio=2,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=16,
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        head_hidden_size=8,
        depth_estimation_type="relative",
    )
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)


def _build_dpt(folder: pathlib.Path) -> None:
    """Intel/dpt-large: DPTConfig (a ViT backbone, no timm), DPTImageProcessor."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)
    config = DPTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        head_in_index=-1,
        is_hybrid=False,
    )
    DPTForDepthEstimation(config).save_pretrained(folder)
