"""Each augmentation plugin: its effect, shape and range, determinism under a seed, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from graftflow.core.config import PipelineConfig, PluginRef
from graftflow.core.data.augmentation import augment_policy, compose_batch
from graftflow.core.errors import ConfigError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import AugmentContext
from graftflow.core.validation import validate_config


@pytest.fixture(scope="module")
def host():
    return PluginHost()


def build(host, name, placement="sample", num_classes=4, **params):
    ref = PluginRef.model_validate({"name": name, "placement": placement, **params})
    policy = augment_policy(host, [ref], "augment.train", "cpu", AugmentContext(num_classes, 16, 3))
    return (policy.sample or policy.batch)[0]


def image(seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(40, 216, (3, size, size), generator=g, dtype=torch.uint8)


def batch(n=16, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % 4


def seeded(fn, seed=0):
    torch.manual_seed(seed)
    return fn()


SAMPLE_OPS = [
    ("horizontal-flip", {"p": 1.0}),
    ("vertical-flip", {"p": 1.0}),
    ("random-rotation", {"degrees": 45}),
    ("random-affine", {}),
    ("random-resized-crop", {"size": 8}),
    ("color-jitter", {"brightness": 0.5, "hue": 0.1}),
    ("gaussian-noise", {"sigma": 0.1}),
    ("random-erasing", {"p": 1.0}),
    ("autocontrast", {"p": 1.0}),
    ("equalize", {"p": 1.0}),
    ("rand-augment", {"num_ops": 3, "magnitude": 15}),
    ("trivial-augment", {}),
]


@pytest.mark.parametrize("name,params", SAMPLE_OPS, ids=[n for n, _ in SAMPLE_OPS])
def test_sample_ops_keep_uint8_change_the_image_and_repeat_under_a_seed(host, name, params):
    op = build(host, name, **params)
    x = image()
    out = seeded(lambda: op(x))
    size = params.get("size", 16)
    assert out.shape == (3, size, size) and out.dtype == torch.uint8
    assert any(o.shape != x.shape or not torch.equal(o, x) for o in (seeded(lambda: op(x), s) for s in range(5)))
    assert torch.equal(seeded(lambda: op(x), 3), seeded(lambda: op(x), 3))
    if name not in ("horizontal-flip", "vertical-flip", "autocontrast", "equalize"):  # p=1: no randomness left
        assert any(not torch.equal(seeded(lambda: op(x), s), out) for s in range(1, 6))


def test_flips_mirror_exactly(host):
    x = image()
    assert torch.equal(build(host, "horizontal-flip", p=1.0)(x), x.flip(-1))
    assert torch.equal(build(host, "vertical-flip", p=1.0)(x), x.flip(-2))
    assert torch.equal(build(host, "horizontal-flip", p=0.0)(x), x)


def test_contrast_ops_stretch_a_low_contrast_image(host):
    x = torch.randint(100, 131, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for name in ("autocontrast", "equalize"):
        out = build(host, name, p=1.0)(x)
        assert int(out.min()) < 100 and int(out.max()) > 120, name


def test_noise_has_the_configured_spread(host):
    x = torch.full((3, 64, 64), 128, dtype=torch.uint8)
    out = seeded(lambda: build(host, "gaussian-noise", sigma=0.1)(x))
    assert abs(float((out.float() - 128).std()) / 255 - 0.1) < 0.01


# --- batch forms: per-sample randomness, float [0, 1] in and out ----------------------------------

BATCH_OPS = [
    ("horizontal-flip", {"p": 0.5}),
    ("vertical-flip", {"p": 0.5}),
    ("random-resized-crop", {"size": 8}),
    ("color-jitter", {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}),
    ("gaussian-noise", {"sigma": 0.1}),
    ("random-erasing", {"p": 1.0}),
]


@pytest.mark.parametrize("name,params", BATCH_OPS, ids=[n for n, _ in BATCH_OPS])
def test_batch_forms_draw_per_sample_params_stay_in_range_and_repeat(host, name, params):
    op = build(host, name, placement="batch", **params)
    x = batch()[0][:1].expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    labels = torch.zeros(16, dtype=torch.long)
    out, out_labels = seeded(lambda: op(x, labels))
    size = params.get("size", 16)
    assert out.shape == (16, 3, size, size) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1 and torch.equal(out_labels, labels)
    distinct = {out[i].numpy().tobytes() for i in range(16)}
    assert len(distinct) > 1  # v2 on a 4-D tensor would treat all 16 alike
    assert torch.equal(seeded(lambda: op(x, labels)[0], 5), seeded(lambda: op(x, labels)[0], 5))


def test_batch_flip_flips_a_p_fraction_exactly(host):
    x, labels = batch(256)
    out, _ = seeded(lambda: build(host, "horizontal-flip", placement="batch", p=0.5)(x, labels))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(256)]
    kept = [torch.equal(out[i], x[i]) for i in range(256)]
    assert all(f or k for f, k in zip(flipped, kept, strict=False)) and 90 < sum(flipped) < 166


def test_batch_erasing_fills_one_box_per_image(host):
    x = torch.ones(8, 3, 16, 16)
    out, _ = seeded(
        lambda: build(host, "random-erasing", placement="batch", p=1.0, scale_min=0.1, scale_max=0.2)(
            x, torch.zeros(8, dtype=torch.long)
        )
    )
    erased = (out == 0).all(1).float().mean(dim=(1, 2))
    assert ((erased > 0.05) & (erased < 0.3)).all()


# --- MixUp and CutMix: soft targets -------------------------------------------------------------


def _distinct_batch(n=8):
    images = torch.arange(n, dtype=torch.float32).div(n).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    return images, torch.arange(n)


def test_mixup_blends_images_and_labels_with_the_same_weight(host):
    op = build(host, "mixup", placement="auto", num_classes=8, alpha=0.4)
    x, y = _distinct_batch()
    out, soft = seeded(lambda: op(x, y))
    assert soft.shape == (8, 8) and torch.allclose(soft.sum(1), torch.ones(8))
    for i in range(8):
        lam = float(soft[i, i])
        partner = (i - 1) % 8  # v2 mixes each image with the previous one in the batch
        assert torch.allclose(soft[i, partner], torch.tensor(1 - lam), atol=1e-6)
        assert torch.allclose(out[i], lam * x[i] + (1 - lam) * x[partner], atol=1e-6)
    assert torch.equal(seeded(lambda: op(x, y)[1], 7), seeded(lambda: op(x, y)[1], 7))


def test_cutmix_labels_match_the_pasted_area(host):
    op = build(host, "cutmix", placement="auto", num_classes=8)
    x, y = _distinct_batch()
    for seed in range(3):
        out, soft = seeded(lambda: op(x, y), seed)
        assert torch.allclose(soft.sum(1), torch.ones(8))
        for i in range(8):
            own = float((out[i] == x[i]).all(0).float().mean())
            assert own == pytest.approx(float(soft[i, i]), abs=1e-6)
            assert float(soft[i, (i - 1) % 8]) == pytest.approx(1 - own, abs=1e-6)


def test_mix_probability_and_one_hot_when_skipped(host):
    op = build(host, "mixup", placement="auto", num_classes=8, p=0.0)
    x, y = _distinct_batch()
    out, soft = op(x, y)
    assert torch.equal(out, x) and torch.equal(soft, torch.eye(8))


def test_cross_entropy_trains_on_soft_targets(host):
    """Training on MixUp's soft targets drives each prediction to that image's mix (smoothed): minimising the
    configured loss over free logits ends at softmax = (1 − ε)·target + ε/C, the mixing weights of the op."""
    op = build(host, "mixup", placement="auto", num_classes=8, alpha=0.4)
    x, y = _distinct_batch()
    _, soft = seeded(lambda: op(x, y), 3)
    assert ((soft > 0.05) & (soft < 0.95)).any()  # genuinely mixed targets
    loss = host.losses.get("cross-entropy").factory(label_smoothing=0.1)
    logits = torch.zeros(8, 8, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss(logits, soft)
        value.backward()
        return value

    opt.step(closure)
    assert torch.allclose(logits.softmax(1), 0.9 * soft + 0.1 / 8, atol=1e-3)


def test_compose_batch_converts_uint8_then_normalises(host):
    flip = build(host, "horizontal-flip", placement="batch", p=1.0)
    apply = compose_batch([flip], lambda t: (t - 0.5) / 0.5)
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out, _ = apply(images, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(out, (images.float() / 255).flip(-1) * 2 - 1)


# --- placement ---------------------------------------------------------------------------------


def places(host, names, device="cpu"):
    refs = [PluginRef.model_validate(n) for n in names]
    return [e["placement"] for e in augment_policy(host, refs, "augment.train", device).entries]


def test_auto_placement_moves_a_batchable_tail_to_cuda_only(host):
    names = ["random-rotation", "horizontal-flip", "color-jitter", "mixup"]
    assert places(host, names, "cuda") == ["sample", "batch", "batch", "batch"]
    assert places(host, names, "cpu") == ["sample", "sample", "sample", "batch"]
    assert places(host, ["horizontal-flip", "random-rotation"], "cuda") == ["sample", "sample"]


# --- one-line errors naming the op and the field ------------------------------------------------


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"name": "horizontal-flip", "p": 2}, "augment.train[0].p: Input should be less than or equal to 1"),
        (
            {"name": "random-erasing", "scale_min": 0.5, "scale_max": 0.1},
            "augment.train[0]: scale_min must be <= scale_max, got 0.5 > 0.1",
        ),
        ({"name": "gaussian-noise", "sigmaa": 0.1}, "augment.train[0].sigmaa: unknown field"),
        ({"name": "rand-augment", "magnitude": 31}, "augment.train[0].magnitude:"),
        ({"name": "mixup", "alpha": 0}, "augment.train[0].alpha: Input should be greater than 0"),
        (
            {"name": "random-rotation", "placement": "batch"},
            "augment.train[0].placement: 'random-rotation' has no batch form",
        ),
        ({"name": "mixup", "placement": "sample"}, "augment.train[0].placement: 'mixup' runs on whole batches only"),
        ({"name": "horizontal-flip", "placement": "gpu"}, "augment.train[0].placement: expected auto, sample or batch"),
    ],
)
def test_bad_parameters_are_one_line_errors(host, entry, message):
    with pytest.raises(ConfigError) as info:
        augment_policy(host, [PluginRef.model_validate(entry)], "augment.train")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_sample_op_after_a_batch_op_and_batch_ops_in_eval_are_refused(host):
    refs = [PluginRef.model_validate(r) for r in ({"name": "horizontal-flip", "placement": "batch"}, "random-rotation")]
    with pytest.raises(
        ConfigError, match=r"augment.train\[1\]: 'random-rotation' runs per sample after batch op 'horizontal-flip'"
    ):
        augment_policy(host, refs, "augment.train")
    with pytest.raises(ConfigError, match=r"augment.eval\[0\]: 'cutmix' runs on training batches only"):
        augment_policy(host, [PluginRef(name="cutmix")], "augment.eval", training=False)


def test_config_check_refuses_a_loss_without_soft_targets_next_to_mixup(host):
    config = PipelineConfig.model_validate(
        {"augment": {"train": ["mixup"]}, "finetune": {"loss": {"name": "focal"}}, "pretrain": {"enabled": False}}
    )
    with pytest.raises(
        ConfigError,
        match=r"finetune.loss.name: 'focal' takes class indices only, but augment.train "
        r"has 'mixup'.*cross-entropy",
    ):
        validate_config(config, host, ["finetune"])
    ok = PipelineConfig.model_validate({"augment": {"train": ["cutmix"]}, "pretrain": {"enabled": False}})
    validate_config(ok, host, ["finetune"])


# --- batch ops and masks (AugmentationSpec.batch_masks) ------------------------------------------


def _mask_batch(n=6, size=16):
    """Images whose every pixel says its image (i / n) and masks with the same value in every class."""
    images = torch.arange(n, dtype=torch.float32).div(n).view(n, 1, 1, 1).expand(n, 1, size, size).contiguous()
    masks = (torch.arange(n) % 2).float().view(n, 1, 1, 1).expand(n, 4, size, size).contiguous()
    return images, masks


def test_every_built_in_batch_op_declares_what_it_does_with_masks(host):
    modes = {n: e.spec.batch_masks for n, e in host.augmentations.entries()}
    assert modes["cutmix"] == "joint" and modes["mixup"] == "refused"
    assert {modes[n] for n in ("color-jitter", "gaussian-noise", "random-erasing")} == {"image-only"}
    assert {modes[n] for n in ("horizontal-flip", "vertical-flip", "random-resized-crop")} == {"refused"}


def test_cutmix_cuts_the_mask_with_the_same_box(host):
    ref = PluginRef.model_validate({"name": "cutmix"})
    op = augment_policy(host, [ref], "augment.train", "cpu", AugmentContext(4, 16, 1), masks=True).batch[0]
    x, m = _mask_batch()
    for seed in range(4):
        out, masks = seeded(lambda: op(x, m), seed)
        assert masks.shape == m.shape and set(masks.unique().tolist()) <= {0.0, 1.0}  # still masks, not blends
        pasted = out != x  # where a pixel came from the previous image (each image's pixels differ)
        assert pasted.any()
        for i in range(len(x)):
            source = (i - 1) % len(x)
            box = pasted[i, 0]
            assert torch.equal(masks[i][:, box], m[source][:, box]) and torch.equal(masks[i][:, ~box], m[i][:, ~box])


@pytest.mark.parametrize("name", ["color-jitter", "gaussian-noise"])
def test_colour_and_noise_batch_ops_leave_masks_alone(host, name):
    ref = PluginRef.model_validate({"name": name, "placement": "batch"})
    op = augment_policy(host, [ref], "augment.train", "cpu", AugmentContext(4, 16, 1), masks=True).batch[0]
    x, m = _mask_batch()
    out, masks = seeded(lambda: op(x, m))
    assert not torch.equal(out, x) and masks is m


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "mixup"}, "augment.train[0]: 'mixup' cannot run on batches of masks"),
        (
            {"name": "horizontal-flip", "placement": "batch"},
            "augment.train[0]: 'horizontal-flip' cannot run on batches of masks (its batch form would change the "
            "images and not their masks); use placement sample",
        ),
        ({"name": "random-resized-crop", "placement": "batch"}, "'random-resized-crop' cannot run on batches of masks"),
    ],
)
def test_batch_ops_that_ignore_masks_are_refused_for_a_mask_task_before_any_work(host, entry, message):
    config = PipelineConfig.model_validate(
        {"task": "segmentation", "augment": {"train": [entry]}, "pretrain": {"enabled": False}}
    )
    with pytest.raises(ConfigError) as info:
        validate_config(config, host, ["finetune"])
    assert message in str(info.value) and "\n" not in str(info.value).strip()


def test_a_mask_task_flips_per_sample_under_auto_and_takes_cutmix_with_its_own_loss(host):
    refs = [PluginRef(name="horizontal-flip"), PluginRef(name="color-jitter"), PluginRef(name="cutmix")]
    policy = augment_policy(host, refs, "augment.train", "cuda", AugmentContext(4, 16, 1), masks=True)
    assert [e["placement"] for e in policy.entries] == ["sample", "batch", "batch"] and not policy.soft_targets
    config = {
        "task": "segmentation",
        "augment": {"train": ["horizontal-flip", "cutmix"]},
        "pretrain": {"enabled": False},
    }
    validate_config(PipelineConfig.model_validate(config), host, ["finetune"])  # bce-dice is fine: masks stay masks


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixing_unlabelled_pretraining_batches_mixes_images_and_keeps_the_labels(host, name):
    """Self-supervised pretraining reads images with label -1; one-hot encoding those crashed."""
    op = build(host, name, placement="auto", num_classes=3)
    x, _ = _distinct_batch()
    unlabelled = torch.full((8,), -1)
    out, labels = seeded(lambda: op(x, unlabelled))
    assert torch.equal(labels, unlabelled) and out.shape == x.shape and not torch.equal(out, x)
