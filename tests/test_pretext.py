"""Self-supervised pretexts on tiny real digits: views, masks, momentum encoders, and that they learn."""

import copy

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from graftflow.core import ConfigError, ModelFamily, PretextContext
from graftflow.core.plugin_manager import PluginHost
from graftflow.plugins.losses.contrastive import InfoNCE
from graftflow.plugins.pretext._views import Views
from graftflow.plugins.pretext.moco import MoCo
from graftflow.plugins.pretext.simclr import SimCLR
from graftflow.plugins.pretext.simmim import SimMIM


@pytest.fixture(scope="module")
def host():
    return PluginHost()


@pytest.fixture(scope="module")
def digits():
    """96 real 8×8 digits, normalised like the pipeline does (mean 0.5, std 0.5)."""
    images = torch.tensor(load_digits().images[:96], dtype=torch.float32)[:, None] / 16
    return (images - 0.5) / 0.5


def context(host, family="resnet", variant="tiny", size=8):
    return PretextContext(host.families.get(family), variant, {}, 1, size, 0, lambda: InfoNCE(0.2))


def train(module, images, steps, lr=3e-3, batch=48):
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(images))[:batch]
        loss = module.step(images[idx], torch.zeros(batch, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_pretexts_are_registered_with_their_contract(host):
    simclr, simmim, moco = (host.pretexts.get(n) for n in ("simclr", "simmim", "moco"))
    assert not simclr.needs_labels and simclr.loss_kind == "pretext" and simclr.default_loss == "infonce"
    assert not moco.needs_labels and moco.default_loss == "infonce"
    assert not simmim.needs_labels and simmim.loss_kind is None and simmim.families is None


def test_views_give_each_image_its_own_augmentation(digits):
    torch.manual_seed(0)
    views = Views(8)
    a, b = views(digits[:16]), views(digits[:16])
    assert a.shape == digits[:16].shape and a.dtype == digits.dtype
    assert not torch.allclose(a, b)
    plain = Views(8, crop_scale_min=1.0, rotation=0, jitter=0, noise=0, erase=0)  # identity up to the crop's aspect
    torch.manual_seed(1)
    assert (plain(digits[:16]) - digits[:16]).abs().mean() < 0.25
    per_image = (a - digits[:16]).abs().flatten(1).mean(1)
    assert per_image.std() > 0  # not one transform for the whole batch


@pytest.mark.parametrize("family, variant", [("resnet", "tiny"), ("vit", "micro")])
def test_simclr_embeds_two_views_and_its_loss_falls(host, digits, family, variant):
    module = SimCLR(context(host, family, variant), proj_dim=32)
    assert module.embed(digits[:4]).shape == (4, 32)
    losses = train(module, digits, steps=30)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses
    assert all(p.grad is not None for p in module.backbone.parameters() if p.requires_grad)


def test_simmim_masks_a_fixed_share_of_patches(host):
    module = SimMIM(context(host, "vit", "micro", size=16), mask_ratio=0.6)
    assert module.patch == 4 and module.grid == 4
    mask = module.random_mask(5, torch.device("cpu"))
    assert mask.shape == (5, 4, 4) and mask.flatten(1).sum(1).tolist() == [10.0] * 5  # round(0.6 · 16)
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 1  # a new mask per image


@pytest.mark.parametrize("family, variant", [("vit", "micro"), ("resnet", "tiny")])
def test_simmim_sees_nothing_of_the_masked_pixels(host, digits, family, variant):
    """Changing pixels under the mask cannot change the reconstruction: they are hidden from the encoder."""
    module = SimMIM(context(host, family, variant, size=8), mask_ratio=0.5, mask_patch=2).eval()
    images = digits[:4]
    mask = module.random_mask(4, torch.device("cpu"))
    pix = module._pixels(mask)
    scrambled = images * (1 - pix) + torch.randn_like(images) * pix
    with torch.no_grad():
        out, out_scrambled = module.reconstruct(images, mask), module.reconstruct(scrambled, mask)
        other = module.reconstruct(images + (1 - pix) * 0.5, mask)
    assert out.shape == images.shape
    assert torch.allclose(out, out_scrambled, atol=1e-5)
    assert not torch.allclose(out, other, atol=1e-3)  # the visible pixels do matter


def test_simmim_loss_counts_only_masked_pixels(host, digits):
    module = SimMIM(context(host, "resnet", "tiny", size=8), mask_ratio=0.5, mask_patch=2)
    images = digits[:4]
    torch.manual_seed(3)
    mask = module.random_mask(4, torch.device("cpu"))
    pix = module._pixels(mask)
    perfect_where_masked = images * pix + 5.0 * (1 - pix)  # wildly wrong only where nothing was hidden
    module.reconstruct = lambda x, m: perfect_where_masked
    module.random_mask = lambda b, device: mask
    assert module.step(images, None).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("family, variant", [("vit", "micro"), ("resnet", "tiny")])
def test_simmim_loss_falls(host, digits, family, variant):
    module = SimMIM(context(host, family, variant, size=8), mask_ratio=0.5, mask_patch=2)
    losses = train(module, digits, steps=25)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_simmim_rejects_what_it_cannot_mask(host):
    with pytest.raises(ConfigError, match="must be a multiple of the ViT patch size 4, got 6"):
        SimMIM(context(host, "vit", "micro", size=16), mask_patch=6)
    with pytest.raises(ConfigError, match="3 px patches do not tile 8 px images"):
        SimMIM(context(host, "resnet", "tiny", size=8), mask_patch=3)

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 4)

        def forward_features(self, x):
            return self.fc(x.flatten(1))

    flat = ModelFamily("mlp", {"s": ""}, lambda v, **kw: Flat(), lambda m: [], lambda m, n: None)
    ctx = PretextContext(flat, "s", {}, 1, 8, 0, None)
    with pytest.raises(ConfigError, match="model family 'mlp' gives features of shape \\(4,\\)"):
        SimMIM(ctx)


def test_moco_key_encoder_is_a_frozen_moving_average_and_the_queue_fills(host, digits):
    module = MoCo(context(host), proj_dim=16, queue=64, momentum=0.9)
    assert not any(p.requires_grad for p in module.key_backbone.parameters())
    with torch.no_grad():
        for p in module.backbone.parameters():
            p.add_(1.0)  # e.g. weights loaded after build: the first step copies them
    module.step(digits[:16], None)
    pairs = zip(module.backbone.parameters(), module.key_backbone.parameters(), strict=True)
    assert all(torch.equal(p, k) for p, k in pairs)
    before = [k.clone() for k in module.key_backbone.parameters()]
    online = [p.detach().clone() for p in module.backbone.parameters()]
    with torch.no_grad():
        for p in module.backbone.parameters():
            p.mul_(2)
    module.step(digits[16:32], None)
    for k, k0, p0 in zip(module.key_backbone.parameters(), before, online, strict=False):
        assert torch.allclose(k, 0.9 * k0 + 0.1 * 2 * p0, atol=1e-6)
    assert int(module.queue_ptr) == 32
    assert torch.allclose(module.queue.norm(dim=1), torch.ones(64), atol=1e-5)


def test_moco_step_descends_its_own_objective(host, digits):
    """The gradient of a step reaches the query encoder and points downhill: a small move along it lowers the same
    objective (same views, same queue). A query detached from the graph, or a loss that ignored it, would fail."""
    module = MoCo(context(host), proj_dim=16, queue=64, momentum=0.999)
    for start in range(0, 64, 16):  # fill the queue with real keys
        module.step(digits[start : start + 16], None)
    batch = digits[64:96]

    def objective(m) -> torch.Tensor:
        torch.manual_seed(7)  # the same views every time
        return copy.deepcopy(m).step(batch, None)  # a copy: the queue and key encoder stay as they are

    before = objective(module)
    trainable = [p for p in module.parameters() if p.requires_grad]
    probe = copy.deepcopy(module)
    torch.manual_seed(7)
    names = [n for n, p in probe.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(probe.step(batch, None), [p for p in probe.parameters() if p.requires_grad])
    reached = {n.split(".")[0] for n, g in zip(names, grads, strict=True) if float(g.abs().sum()) > 0}
    assert reached == {"backbone", "projector"}  # the key encoder is not trained (requires_grad=False)
    with torch.no_grad():
        for p, g in zip(trainable, grads, strict=True):
            p.sub_(1e-2 * g / (g.norm() + 1e-12))
    assert float(objective(module)) < float(before) - 1e-4
