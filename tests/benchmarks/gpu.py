"""`make bench-gpu`: the GPU figures, in one short script (a few minutes on one modern GPU).

Needs CUDA: without it, one line on stderr and exit 2 (nothing is measured on a CPU and called a GPU figure).

- `gpu_training_loop_<mode>`: ResNet-50 (timm, random init, 1000 classes) at 224 px, batch BATCH, bf16
  autocast (fp16 + grad scaler below capability 8.0, as `DevicePolicy` decides) and channels_last, AdamW;
  graftflow's loop (`core.training.loop.train`: the fine-tune stage's gradient step, scheduler and
  callbacks' events) vs a bare hand-written loop with the very same settings, in the same run, ABBA
  repeats, medians of images/s; `mode` is `eager` or `compiled` (torch.compile of the model's forward,
  through `core.training.compile.compiled_forward` for graftflow, plain `torch.compile` for the bare loop).
- `gpu_input_pipeline`: images/s delivered to the GPU by the Arrow store + decoded cache, batch ops
  (random resized crop, flip, colour jitter) and normalisation run on the GPU, vs torchvision ImageFolder +
  PIL per-sample transforms in the same number of workers (the CPU bench's baseline), at 64 px.

Results go to .graft/bench/*.json like `make bench`'s; `--quick` halves the steps.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

BATCH, SIZE, CLASSES = 64, 224, 1000


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        print(
            "error: make bench-gpu needs a CUDA GPU, and torch sees none (torch.cuda.is_available() is False); "
            "the CPU figures are `make bench`",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _policy():
    from graftflow.core.device import Hardware, apply_backend_settings, resolve_policy

    policy = resolve_policy("cuda", "auto", Hardware.probe(), conv_net=True)
    apply_backend_settings(policy)
    return policy


def _model(policy):
    import timm
    import torch

    torch.manual_seed(0)
    return policy.prepare(timm.create_model("resnet50", pretrained=False, num_classes=CLASSES))


def _batches(steps: int):
    """In-memory pinned CPU batches (float, normalised-looking): both loops copy them to the GPU alike."""
    import torch

    return [
        (torch.randn(BATCH, 3, SIZE, SIZE).pin_memory(), torch.randint(0, CLASSES, (BATCH,)).pin_memory())
        for _ in range(steps)
    ]


def _bare(model, forward, data, policy) -> float:
    import torch
    from torch import nn

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=policy.grad_scaler)
    dtype = torch.bfloat16 if policy.precision == "bf16" else torch.float16
    model.train()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in data:
        x = x.to("cuda", non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to("cuda", non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            loss = nn.functional.cross_entropy(forward(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    torch.cuda.synchronize()
    return len(data) * BATCH / (time.perf_counter() - start)


def _ours(model, forward, data, policy) -> float:
    import torch
    from torch import nn

    from graftflow.core.training.loop import train
    from graftflow.core.training.schedule import GroupScheduler

    opt = torch.optim.AdamW([{"params": list(model.parameters()), "lr": 1e-4, "base_lr": 1e-4}])
    sched = GroupScheduler(opt, "constant", len(data), 0.0)
    torch.cuda.synchronize()
    start = time.perf_counter()
    train(model, lambda x, y: nn.functional.cross_entropy(forward(x), y), data, opt, sched, policy, 1, phase="bench")
    torch.cuda.synchronize()
    return len(data) * BATCH / (time.perf_counter() - start)


def training_loop(compiled: bool, steps: int, repeats: int):
    import torch

    from graftflow.core.training.compile import compiled_forward
    from tests.benchmarks.bench_training_loop import _alternate, _bests
    from tests.benchmarks.results import Result

    policy = _policy()
    base = _model(policy)
    ours_model, bare_model = copy.deepcopy(base), copy.deepcopy(base)
    del base
    ours_forward, status = compiled_forward(ours_model, compiled)
    bare_forward = torch.compile(bare_model) if compiled else bare_model
    data = _batches(steps)
    start = time.perf_counter()
    _ours(ours_model, ours_forward, data[:3], policy)  # warm-up: cudnn autotune, and the compilation
    _bare(bare_model, bare_forward, data[:3], policy)
    warm_up = time.perf_counter() - start
    ours, bare = _alternate(
        lambda: _ours(ours_model, ours_forward, data, policy),
        lambda: _bare(bare_model, bare_forward, data, policy),
        repeats,
    )
    mode = "compiled" if compiled else "eager"
    result = Result(
        name=f"gpu_training_loop_{mode}",
        value=statistics.median(ours),
        baseline=statistics.median(bare),
        unit="images/s",
        target_ratio=0.98,
        notes=f"ResNet-50 {SIZE} px, batch {BATCH}, {policy.precision} autocast + channels_last, AdamW, {mode}; "
        f"graftflow's loop vs a bare loop, {steps} steps × {repeats} ABBA repeats, medians; {policy.accelerator}",
        extra={
            "ours": ours,
            "bare": bare,
            **_bests(ours, bare),
            "compile_status": status,
            "warm_up_s": round(warm_up, 1),
            "policy": policy.as_summary(),
            "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        },
    )
    return result  # the models and batches go with this frame; main() empties the CUDA cache between runs


def input_pipeline(images: int, epochs: int, repeats: int):
    """The CPU bench's pipelines, with graftflow's batch ops on the GPU (as `task_loaders` places them there)."""
    import torch

    from graftflow.core.config import PluginRef
    from graftflow.core.data.augmentation import augment_policy, batch_normalizer, compose_batch
    from graftflow.core.data.dataset import ArrowImageDataset, make_loader, select
    from graftflow.core.plugin_manager import PluginHost
    from tests.benchmarks import bench_input_pipeline as cpu

    workers = cpu.WORKERS
    with tempfile.TemporaryDirectory(prefix="graft-bench-gpu-input-") as tmp:
        root, url = cpu.image_store(Path(tmp), images)

        def ours() -> tuple[float, int]:
            start = time.perf_counter()
            refs = [PluginRef.model_validate({**p, "placement": "batch"}) for p in cpu.POLICY]
            policy = augment_policy(PluginHost(), refs, "augment.train", "cuda")
            sel = select(url, ["train", "val", "test"], None, "bench")
            dataset = ArrowImageDataset(sel, 3, cpu.SIZE, policy.sample, None, cache=True)
            transform = compose_batch(policy.batch, batch_normalizer([0.5], [0.5], 3))
            loader = make_loader(dataset, cpu.BATCH, True, workers, seed=0, pin_memory=True)
            seen = 0
            for _ in range(epochs):
                for x, y in loader:
                    x, y = transform(x.to("cuda", non_blocking=True), y.to("cuda", non_blocking=True))
                    seen += len(x)
            torch.cuda.synchronize()
            return time.perf_counter() - start, seen

        def baseline() -> tuple[float, int]:
            start = time.perf_counter()
            loader = cpu._loader(cpu.datasets.ImageFolder(str(root), transform=cpu.PIL_TRANSFORM))
            seen = 0
            for _ in range(epochs):
                for x, _y in loader:
                    x = x.to("cuda", non_blocking=True)
                    seen += len(x)
            torch.cuda.synchronize()
            return time.perf_counter() - start, seen

        rates = cpu._alternating({"baseline": baseline, "ours": ours}, repeats)
    return cpu._result(
        "gpu_input_pipeline",
        rates,
        "ours",
        "baseline",
        f"{images} JPEGs {cpu.SIZE}×{cpu.SIZE} RGB, {epochs} epoch(s) from a cold start to the last batch on the GPU: "
        f"Arrow store + decoded cache + batch ops on the GPU vs ImageFolder + PIL per-sample transforms, "
        f"{workers} workers each, batch {cpu.BATCH}; {repeats} alternating repeats, medians",
        target=5.0,
        epochs=epochs,
        images=images,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench-gpu")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args(argv)
    _require_cuda()
    from tests.benchmarks.results import write

    steps, repeats = (10, 2) if args.quick else (20, 4)
    import torch

    results = []
    for compiled in (False, True):
        results.append(training_loop(compiled, steps, repeats))
        torch.cuda.empty_cache()
    results.append(input_pipeline(2000, 3, repeats))
    for path in write(results):
        print(path)
    for r in results:
        print(f"{r.name}: {r.value:.4g} vs {r.baseline:.4g} {r.unit} = {r.ratio:.2f}× (target {r.target}) — {r.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
