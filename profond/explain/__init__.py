"""Explanations of an image classifier's decision (course §12.5, exercise 12.3; Grad-CAM of
exercise 4.3): saliency, SmoothGrad, Integrated Gradients, Grad-CAM, occlusion
(:mod:`.attributions`), exact and Kernel-SHAP Shapley values of pixel groups
(:mod:`.shapley`), token attributions of a text classifier (:mod:`.text`), and their
overlays on the image or the sentence (:mod:`.figures`)."""

from .attributions import (
    IG_METHODS,
    completeness_gap,
    conv_layer,
    conv_layers,
    gradcam,
    ig_quadrature,
    integrated_gradients,
    last_conv_layer,
    occlusion,
    resolve_target,
    saliency,
    smoothgrad,
    standardised,
)
from .shapley import (
    MAX_EXACT_PLAYERS,
    grid_groups,
    group_map,
    image_game,
    kernel_shap,
    shapley_exact,
    shapley_image,
)
from .text import embedding_layer, embedding_scores, token_integrated_gradients, token_saliency

__all__ = ["IG_METHODS", "MAX_EXACT_PLAYERS", "completeness_gap", "conv_layer", "conv_layers", "gradcam",
           "grid_groups", "group_map", "ig_quadrature", "image_game", "integrated_gradients", "kernel_shap",
           "last_conv_layer", "occlusion", "resolve_target", "saliency", "shapley_exact", "shapley_image",
           "smoothgrad", "standardised", "embedding_layer", "embedding_scores", "token_integrated_gradients", "token_saliency"]
