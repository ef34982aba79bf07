"""SimMIM (Xie et al. 2022): mask random image patches, regress their pixels with a light decoder.

The target is the normalised input itself; the loss is the L1 distance on masked pixels only.
A fixed fraction `mask_ratio` of the `mask_patch`×`mask_patch` patches of every image is
masked. Two ways to mask, chosen by the model family:

- families with the capability "masked-image-modeling" (vit) mask *tokens*: the patch
  embeddings of masked patches are replaced by a learnable mask token before the position
  embedding and the transformer blocks. Such a family builds timm-VisionTransformer-style
  models (`patch_embed`, `_pos_embed`, `patch_drop`, `norm_pre`, `blocks`, `norm`,
  `num_prefix_tokens`); the decoder is SimMIM's: a 1×1 conv from the patch tokens to
  patch² × channels values, then pixel shuffle.
- every other family whose `forward_features` gives a (B, C, h, w) map (resnet, any timm CNN)
  is masked in *input space*: masked pixels are replaced by a learnable per-channel value
  and a 1×1 conv + pixel shuffle decodes the feature map back to the image size.

The pretext computes its own objective: `pretrain.loss` stays unset.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from graftflow.core import PretextTask, forward_to, hookimpl, lazy_module

# The pretext's torch code lives in _simmim.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.pretext._simmim"
_impl = lazy_module(_IMPL)
__getattr__ = forward_to(_IMPL, ("SimMIM", "_pair"))


CAPABILITY = "masked-image-modeling"


TOKEN_INTERFACE = ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm", "num_prefix_tokens")


class SimMIMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mask_ratio: float = Field(0.6, gt=0, lt=1, description="Fraction of the patches masked in every image.")
    mask_patch: int | None = Field(
        None,
        gt=0,
        description="Side of a masked patch in pixels (default: the ViT's "
        "patch size; image_size / 4 for conv families).",
    )


@hookimpl
def graft_pretext_tasks():
    return [
        PretextTask(
            name="simmim",
            build=lambda ctx, **params: _impl.SimMIM(ctx, **params),
            needs_labels=False,
            params_model=SimMIMParams,
            loss_kind=None,
            default_loss=None,
            description="masked image modeling: L1 on masked patches (ViT tokens; conv nets via masked inputs)",
        )
    ]
