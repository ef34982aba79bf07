"""Every built-in loss against a reference formula written out here, or against torch's own."""

import math

import pytest
import torch
import torch.nn.functional as F

from graftflow.core.config import load_config
from graftflow.core.errors import ConfigError
from graftflow.core.models.weights import save_model
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.training.losses import build_loss
from graftflow.core.validation import validate_config
from graftflow.plugins.losses.classification import ClassBalancedLoss, FocalLoss, class_balanced_weights
from graftflow.plugins.losses.contrastive import BatchHardTriplet, InfoNCE
from graftflow.plugins.losses.distillation import distillation_loss
from graftflow.plugins.losses.domain import MMD
from tests.support import DIGITS


@pytest.fixture(scope="module")
def host():
    return PluginHost()


def batch(n=12, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 2, torch.randint(0, c, (n,), generator=g)


def test_cross_entropy_with_label_smoothing_matches_the_formula(host):
    logits, y = batch()
    eps, k = 0.1, logits.shape[1]
    logp = logits.log_softmax(1)
    reference = ((1 - eps) * -logp[torch.arange(len(y)), y] + eps / k * -logp.sum(1)).mean()
    loss = build_loss(host, {"name": "cross-entropy", "label_smoothing": eps}, "finetune.loss")
    assert loss(logits, y).item() == pytest.approx(reference.item(), rel=1e-6)


def test_focal_matches_the_formula_and_is_cross_entropy_at_gamma_0(host):
    logits, y = batch()
    alpha = [0.5, 1.0, 1.5, 2.0, 0.25]
    p = logits.softmax(1)[torch.arange(len(y)), y]
    reference = (-torch.tensor(alpha)[y] * (1 - p) ** 2 * p.log()).mean()
    assert FocalLoss(2.0, alpha)(logits, y).item() == pytest.approx(reference.item(), rel=1e-5)
    assert FocalLoss(0.0)(logits, y).item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    focal = build_loss(host, {"name": "focal", "gamma": 2.0, "alpha": alpha}, "finetune.loss", list("abcde"))
    assert focal(logits, y).item() == pytest.approx(reference.item(), rel=1e-5)
    with pytest.raises(ConfigError, match=r"^finetune.loss.alpha: 2 values for 5 classes$"):
        build_loss(host, {"name": "focal", "alpha": [1, 2]}, "finetune.loss", list("abcde"))


def test_class_balanced_weights_are_the_inverse_effective_number():
    counts, beta = [1000, 100, 10, 1], 0.99
    effective = [(1 - beta**n) / (1 - beta) for n in counts]
    raw = [1 / e for e in effective]
    expected = [w / sum(raw) * len(counts) for w in raw]
    assert class_balanced_weights(counts, beta).tolist() == pytest.approx(expected, rel=1e-6)
    assert class_balanced_weights(counts, 0.0).tolist() == pytest.approx([1, 1, 1, 1])  # β = 0: no reweighting
    assert class_balanced_weights([5, 0, 5], 0.9).tolist()[1] == 0  # an absent class gets no weight


def test_class_balanced_loss_reweights_each_sample_by_its_class(host):
    logits, y = batch(c=4)
    counts = [500, 50, 5, 1]
    w = class_balanced_weights(counts, 0.999)
    reference = (w[y] * F.cross_entropy(logits, y, reduction="none")).mean()
    loss = build_loss(host, {"name": "class-balanced", "beta": 0.999}, "finetune.loss", list("abcd"), counts)
    assert loss(logits, y).item() == pytest.approx(reference.item(), rel=1e-6)
    per_sample_focal = torch.stack([FocalLoss(2.0)(logits[i : i + 1], y[i : i + 1]) for i in range(len(y))])
    focal = ClassBalancedLoss(w, "focal", 2.0)(logits, y)
    assert focal.item() == pytest.approx((w[y] * per_sample_focal).mean().item(), rel=1e-5)
    with pytest.raises(ConfigError, match="finetune.loss: class-balanced needs labelled training data"):
        build_loss(host, {"name": "class-balanced"}, "finetune.loss")


def test_flooding_wraps_a_registered_loss_and_ascends_below_the_flood_level(host):
    logits, y = batch()
    logits.requires_grad_(True)
    inner = F.cross_entropy(logits, y, label_smoothing=0.2)
    high = build_loss(
        host,
        {"name": "flooding", "b": 0.01, "inner": {"name": "cross-entropy", "label_smoothing": 0.2}},
        "finetune.loss",
    )
    assert high(logits, y, inputs=torch.zeros(1)).item() == pytest.approx(inner.item(), rel=1e-6)  # L > b: unchanged
    b = inner.item() + 1.0
    low = build_loss(
        host, {"name": "flooding", "b": b, "inner": {"name": "cross-entropy", "label_smoothing": 0.2}}, "finetune.loss"
    )
    flooded = low(logits, y, inputs=torch.zeros(1))
    assert flooded.item() == pytest.approx(abs(inner.item() - b) + b, rel=1e-6)
    (g_inner,) = torch.autograd.grad(inner, logits, retain_graph=True)
    (g_flood,) = torch.autograd.grad(flooded, logits)
    assert torch.allclose(g_flood, -g_inner)  # below b the gradient points the other way


def nt_xent_reference(a, b, t):
    """SimCLR's NT-Xent written out: ℓ(i, j) = −log exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ), averaged over the 2N anchors."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = [math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / sum(sims))
    return total / (2 * n)


def test_infonce_is_nt_xent_with_all_2n_minus_2_negatives():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert InfoNCE(0.3)(a, b).item() == pytest.approx(nt_xent_reference(a, b, 0.3), rel=1e-5)
    assert InfoNCE(0.3)(a, a + 0.01 * b).item() < InfoNCE(0.3)(a, b).item()  # aligned views score better


def test_infonce_with_a_negative_bank_is_moco_cross_entropy():
    g = torch.Generator().manual_seed(2)
    q, k, bank = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(10, 8, generator=g)
    qn, kn, bn = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(bank, dim=1)
    reference = (
        sum(
            -math.log(
                math.exp(float(qn[i] @ kn[i]) / 0.2)
                / (math.exp(float(qn[i] @ kn[i]) / 0.2) + sum(math.exp(float(qn[i] @ x) / 0.2) for x in bn))
            )
            for i in range(4)
        )
        / 4
    )
    assert InfoNCE(0.2)(q, k, negatives=bank).item() == pytest.approx(reference, rel=1e-5)


def test_distillation_matches_the_hinton_formula():
    s, y = batch(seed=3)
    t, _ = batch(seed=4)
    T, alpha = 3.0, 0.7
    ps, pt = (s / T).softmax(1), (t / T).softmax(1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    reference = alpha * T * T * kl + (1 - alpha) * F.cross_entropy(s, y)
    assert distillation_loss(s, t, y, T, alpha).item() == pytest.approx(reference.item(), rel=1e-5)


def test_distillation_runs_a_frozen_teacher_checkpoint_on_the_inputs(host, tmp_path):
    family = host.families.get("resnet")
    teacher = family.build("tiny", num_classes=3, in_chans=1, image_size=8).eval()
    meta = {
        "family": "resnet",
        "variant": "tiny",
        "params": {},
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "in_chans": 1,
        "image_size": 8,
        "mean": [0.5],
        "std": [0.5],
    }
    save_model(teacher, tmp_path / "teacher", meta)
    ref = {"name": "distillation", "teacher": str(tmp_path / "teacher"), "temperature": 2.0, "alpha": 0.5}
    loss = build_loss(
        host,
        ref,
        "finetune.loss",
        ["a", "b", "c"],
        [4, 4, 4],
        {"in_chans": 1, "image_size": 8, "mean": [0.5], "std": [0.5]},
    )
    images = torch.randn(5, 1, 8, 8)
    logits, y = torch.randn(5, 3, requires_grad=True), torch.tensor([0, 1, 2, 0, 1])
    loss.train()
    value = loss(logits, y, inputs=images)
    with torch.no_grad():
        expected = distillation_loss(logits, teacher(images), y, 2.0, 0.5)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    value.backward()
    assert logits.grad is not None and not any(p.requires_grad for p in loss.inner.teacher.parameters())
    assert not loss.inner.teacher.training  # BatchNorm keeps its running statistics
    also_file = build_loss(
        host, {**ref, "teacher": str(tmp_path / "teacher" / "model.safetensors")}, "finetune.loss", ["a", "b", "c"]
    )
    assert also_file(logits, y, inputs=images).item() == pytest.approx(value.item(), rel=1e-6)
    with pytest.raises(ConfigError, match=r"^finetune.loss.teacher: the teacher predicts 3 classes, the task has 2$"):
        build_loss(host, ref, "finetune.loss", ["a", "b"])
    with pytest.raises(ConfigError, match=r"^finetune.loss.teacher: the teacher was trained on image_size=8"):
        build_loss(host, ref, "finetune.loss", ["a", "b", "c"], inputs={"image_size": 16})
    with pytest.raises(ConfigError, match=r"^finetune.loss.teacher: '.*nowhere' is not a saved model"):
        build_loss(host, {**ref, "teacher": str(tmp_path / "nowhere")}, "finetune.loss", ["a", "b", "c"])
    with pytest.raises(ConfigError, match="needs the input images"):
        loss(logits, y)


def mmd_reference(x, y, sigmas):
    def k(a, b):
        return sum(math.exp(-float((a - b).pow(2).sum()) / (2 * s * s)) for s in sigmas)

    kxx = sum(k(a, b) for a in x for b in x) / len(x) ** 2
    kyy = sum(k(a, b) for a in y for b in y) / len(y) ** 2
    kxy = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return kxx + kyy - 2 * kxy


def test_mmd_matches_the_gaussian_kernel_formula():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(7, 3, generator=g), torch.randn(5, 3, generator=g) + 1.5
    assert MMD([0.5, 1.0, 2.0])(x, y).item() == pytest.approx(mmd_reference(x, y, [0.5, 1.0, 2.0]), rel=1e-5)
    assert MMD()(x, x).item() == pytest.approx(0.0, abs=1e-6)
    same = MMD()(torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)).item()
    shifted = MMD()(torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g) + 1.0).item()
    assert shifted > 5 * same


def test_batch_hard_triplet_picks_the_farthest_positive_and_nearest_negative():
    g = torch.Generator().manual_seed(6)
    emb, labels = torch.randn(10, 4, generator=g), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 4])
    anchors, pos, neg = [], [], []
    for i in range(len(emb)):
        same = [j for j in range(len(emb)) if labels[j] == labels[i] and j != i]
        other = [j for j in range(len(emb)) if labels[j] != labels[i]]
        if not same:
            continue  # classes 3 and 4 have no positive
        anchors.append(i)
        pos.append(max(same, key=lambda j: float((emb[i] - emb[j]).norm())))
        neg.append(min(other, key=lambda j: float((emb[i] - emb[j]).norm())))
    reference = F.triplet_margin_loss(emb[anchors], emb[pos], emb[neg], margin=0.5)
    assert BatchHardTriplet(margin=0.5)(emb, labels).item() == pytest.approx(reference.item(), rel=1e-6)
    assert BatchHardTriplet()(emb[:1], labels[:1]).item() == 0.0


def test_config_checks_loss_kinds_and_nested_losses(host):
    def problems(*sets):
        with pytest.raises(ConfigError) as err:
            validate_config(load_config(DIGITS, list(sets)), host)
        return str(err.value)

    assert problems("finetune.loss.name=mmd").startswith(
        "finetune.loss.name: 'mmd' is an auxiliary loss; finetune.loss needs a classification loss (class-balanced, "
    )
    assert "finetune.loss.inner.gama: unknown field" in problems(
        "finetune.loss={name: flooding, inner: {name: focal, gama: 2}}"
    )
    assert "finetune.loss.inner.name: unknown loss 'nope'" in problems("finetune.loss={name: flooding, inner: nope}")
    assert problems("pretrain.pretext=simclr").startswith(
        "pretrain.loss.name: 'cross-entropy' is a classification loss; pretrain.loss needs a pretext loss (infonce)"
    )
    assert problems("pretrain.pretext=simmim") == (
        "pretrain.loss: pretext 'simmim' computes its own objective and takes no loss; remove pretrain.loss"
    )
    validate_config(
        load_config(
            DIGITS,
            [
                "pretrain.pretext=simclr",
                "pretrain.loss={name: infonce, temperature: 0.5}",
                "finetune.loss={name: flooding, b: 0.05, inner: {name: focal}}",
            ],
        ),
        host,
    )
