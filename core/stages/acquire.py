"""Acquire: fetch the source and normalise it into the content-addressed Arrow store.

The store's address is a hash of the source, its content-bearing parameters, its
fingerprint and the split options: unchanged inputs find the finished store and
nothing is downloaded or read (`data.cache_hit`). A dataset card (class counts,
image sizes, what the source reported, a sample grid) is written beside
`dataset.json` and published as a Prefect artifact.
"""

from __future__ import annotations

import base64
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from graftflow.core import storage
from graftflow.core.config import SourceConfig
from graftflow.core.data.dataset import ArrowImageDataset, Selection, select
from graftflow.core.data.splits import stratified_split
from graftflow.core.data.store import StoreInfo, build_store, is_complete, read_info, read_table, store_key
from graftflow.core.errors import DataError
from graftflow.core.images import save_grid
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.validation import check_source, plugin_params

log = logging.getLogger("graft.data")

DATASET_FILE = "dataset.json"
PRETRAIN_DATASET_FILE = "pretrain_dataset.json"
TARGET_DATASET_FILE = "target_dataset.json"
CARD_FILE = "dataset_card.md"


def acquire_store(ctx: StageContext, cfg: SourceConfig, field: str) -> StoreInfo:
    """The store for one configured source: found by its content address, or built."""
    source = ctx.host.sources.get(cfg.kind, f"{field}.kind")
    params = plugin_params(source, cfg.params, field)
    check_source(source, params, field)
    split = ctx.config.data.split.model_dump()
    keyed = {k: v for k, v in params.items() if k not in source.cache_exempt}
    url = storage.join(
        ctx.config.data.store_root,
        store_key({"source": source.name, "params": keyed, "fingerprint": source.fingerprint(params), "split": split}),
    )
    if is_complete(url):
        info = read_info(url)
        info.cache_hit = True
        log.info("%s: unchanged inputs, store %s reused (cache hit): nothing downloaded or read", field, url)
    else:
        with tempfile.TemporaryDirectory(prefix="graft-acquire-") as workdir:
            info = build_store(
                source.load(params, Path(workdir)),
                url,
                split,
                {"source": source.name, "params": keyed},
                stratified_split,
            )
        log.info("%s: new store %s: %d images, %d classes", field, url, info.rows, len(info.class_names))
    return info


def run(ctx: StageContext) -> StageResult:
    info = acquire_store(ctx, ctx.config.data.source, "data.source")
    problems = class_problems(ctx, info)
    if problems:  # the store is whole and kept: a fixed config finds it again (cache hit)
        raise DataError("\n".join(problems))
    storage.write_json(str(ctx.out / DATASET_FILE), info.as_summary())
    sample = _sample_grid(ctx, info)
    card = _card(ctx, info, sample)
    counts = [{"class": name, "images": n} for name, n in info.class_counts.items()]
    pretrain_outputs, pretrain_summary = _pretrain_source(ctx)
    target_outputs, target_summary = _method_target(ctx)
    return StageResult(
        outputs={
            "dataset": DATASET_FILE,
            "card": CARD_FILE,
            **({"samples": sample} if sample else {}),
            **pretrain_outputs,
            **target_outputs,
        },
        summary={"data": info.as_summary(), **pretrain_summary, **target_summary},
        artifacts=[
            Artifact(
                "table",
                "dataset-classes",
                f"{info.rows} images, {len(info.class_names)} classes"
                f" ({'cache hit' if info.cache_hit else 'new store'})",
                rows=counts,
            ),
            *([Artifact("image", "dataset-samples", "sample images", path=sample)] if sample else []),
            Artifact("markdown", "dataset-card", "dataset card", markdown=_embed(card, ctx.out, sample)),
        ],
    )


def class_problems(ctx: StageContext, info: StoreInfo) -> list[str]:
    """The classes the config names, and the number the tasks need, against the store: as soon as it
    exists, before anything trains on it. One line per problem."""
    if info.target != "single":
        return []  # label sets: the training stages say what they accept
    cfg, names = ctx.config, info.class_names
    problems = []
    tasks = [("finetune", cfg.finetune.classes, 2)]
    if cfg.pretrain.enabled and cfg.pretrain.source is None:
        pretext = ctx.host.pretexts.get(cfg.pretrain.pretext.name, "pretrain.pretext")
        tasks.append(("pretrain", cfg.pretrain.classes, 2 if pretext.needs_labels else 1))
    short = []  # tasks that take every class of the store, and it has too few
    for section, classes, minimum in tasks:
        unknown = [c for c in classes or () if c not in names]
        if unknown:
            listed = ", ".join(f"'{c}'" for c in unknown)
            verb = "is" if len(unknown) == 1 else "are"
            problems.append(
                f"{section}.classes: class{'es' if len(unknown) > 1 else ''} {listed} {verb} not in the data; "
                f"classes are {', '.join(names)}"
            )
        elif classes is not None and len(set(classes)) < minimum:
            problems.append(f"{section}.classes: names {len(set(classes))} class; {section} needs at least {minimum}")
        elif classes is None and len(names) < minimum:
            short.append(section)
    if short:
        problems.append(_too_few_classes(info, short, max(m for s, _, m in tasks if s in short)))
    return problems


def _too_few_classes(info: StoreInfo, sections: list[str], minimum: int) -> str:
    """One class in the whole store: almost always a layout that did not find the classes; say how to fix it."""
    found = (
        f"{len(info.class_names)} class ('{info.class_names[0]}', {info.rows} images)"
        if info.class_names
        else "0 classes"
    )
    if info.report.get("layout") == "table":
        hint = "check data.source.layout.label_column (each image's class)"
    else:
        hint = (
            "class-per-folder data keeps each class in its own sub-folder (<path>/cat/..., <path>/dog/...); "
            "if they sit deeper, set data.source.layout: {kind: folders, root: FOLDER} to the folder that holds them"
        )
    needs = f"{sections[0]} needs" if len(sections) == 1 else f"{' and '.join(sections)} need"
    return f"data.source: the data has {found}; {needs} at least {minimum}: {hint}"


def _pretrain_source(ctx: StageContext) -> tuple[dict[str, str], dict]:
    """`pretrain.source`, when set: a store of its own (e.g. unlabelled images) for the pretrain stage."""
    cfg = ctx.config.pretrain.source
    if cfg is None:
        return {}, {}
    info = acquire_store(ctx, cfg, "pretrain.source")
    storage.write_json(str(ctx.out / PRETRAIN_DATASET_FILE), info.as_summary())
    return {"pretrain_dataset": PRETRAIN_DATASET_FILE}, {"pretrain_data": info.as_summary()}


def _method_target(ctx: StageContext) -> tuple[dict[str, str], dict]:
    """`finetune.method.target`: the target domain (trained on unlabelled by adaptation methods, scored by
    evaluate under any method that names one), a store of its own."""
    if not ctx.config.finetune.method.params.get("target"):
        return {}, {}
    cfg = SourceConfig.model_validate(ctx.config.finetune.method.params["target"])
    info = acquire_store(ctx, cfg, "finetune.method.target")
    storage.write_json(str(ctx.out / TARGET_DATASET_FILE), info.as_summary())
    return {"target_dataset": TARGET_DATASET_FILE}, {"target_data": info.as_summary()}


def _sample_grid(ctx: StageContext, info: StoreInfo, per_class: int = 4) -> str | None:
    if info.target == "multi":  # a row per label: the first images that carry it
        table = read_table(info.url)
        sel = Selection(
            images=table["image"].combine_chunks(),
            labels=np.zeros(table.num_rows, np.int64),
            class_names=info.class_names,
        )
        sets = table["labels"].to_pylist()
        picks = []
        for label in range(len(info.class_names)):
            picks += [i for i, s in enumerate(sets) if label in s][:per_class]
        picks += [i for i, s in enumerate(sets) if not s][:per_class]
    else:
        sel = select(info.url, ["train", "val", "test"], None, "data", frozenset({info.target}))
        picks = []
        for label in range(len(sel.class_names)):
            picks += np.flatnonzero(sel.labels == label)[:per_class].tolist()
    if not picks:
        return None
    dataset = ArrowImageDataset(sel, ctx.config.data.channels, ctx.config.data.image_size)
    images = [dataset.decode(i) for i in picks]
    save_grid(images, ctx.out / "samples.png", nrow=per_class)
    return "samples.png"


def _card(ctx: StageContext, info: StoreInfo, sample: str | None) -> str:
    """dataset_card.md: what a person wants to know about the data before training on it."""
    source = ctx.config.data.source
    lines = [
        f"# Dataset card: {info.report.get('source') or source.kind}",
        "",
        f"Store `{info.url}` ({'cache hit: unchanged inputs, nothing downloaded or read' if info.cache_hit else 'new store'}).",  # noqa: E501
        "",
        "| images | classes | target | train / val / test | duplicates dropped |",
        "|---|---|---|---|---|",
        f"| {info.rows} | {len(info.class_names)} | {info.target} | "
        f"{' / '.join(str(info.split_counts.get(s, 0)) for s in ('train', 'val', 'test'))} | "
        f"{info.duplicates_dropped} |",
        "",
        "## Classes",
        "",
        "| class | images |",
        "|---|---|",
    ]
    lines += [f"| {name} | {n} |" for name, n in info.class_counts.items()]
    if info.report.get("empty_label_sets"):
        lines.append(f"| (no label) | {info.report['empty_label_sets']} |")
    sizes = info.image_sizes
    if sizes:
        common = ", ".join(f"{w}×{h} ({n})" for w, h, n in sizes.get("most_common", []))
        lines += [
            "",
            "## Image sizes",
            "",
            f"{sizes['distinct']} distinct; smallest {sizes['min'][0]}×{sizes['min'][1]}, largest "
            f"{sizes['max'][0]}×{sizes['max'][1]}; most common: {common}. Resized to "
            f"{ctx.config.data.image_size}×{ctx.config.data.image_size} for training.",
        ]
    lines += _report_lines(info.report)
    if sample:
        lines += ["", "## Samples", "", f"![samples]({sample})"]
    text = "\n".join(lines) + "\n"
    (ctx.out / CARD_FILE).write_text(text, encoding="utf-8")
    return text


def _report_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if report.get("stepped_into"):
        lines += [
            "",
            f"The data holds a single folder at the top, so it was stepped into: `{report['stepped_into']}/` "
            f"(set `data.source.layout.root` to read another folder).",
        ]
    downloads = report.get("downloads")
    if downloads:
        lines += ["", "## Downloads (when the store was built)", "", "| file | status | bytes |", "|---|---|---|"]
        lines += [f"| {d['file']} | {d['status']} | {d['bytes']} |" for d in downloads]
    bad = report.get("bad_images") or {}
    if bad.get("missing") or bad.get("unreadable"):
        lines += [
            "",
            "## Bad images (skipped)",
            "",
            f"{bad['missing']} missing, {bad['unreadable']} unreadable; first: {', '.join(bad['first'])}",
        ]
    unlabelled = report.get("unlabelled_skipped")
    if unlabelled:
        lines += [
            "",
            f"{unlabelled['count']} images without a label were left out; first: {', '.join(unlabelled['first'])}",
        ]
    return lines


def _embed(card: str, out: Path, sample: str | None) -> str:
    """The card for the Prefect UI, with the sample grid inlined (Prefect artifacts cannot reference files)."""
    if not sample:
        return card
    data = base64.b64encode((out / sample).read_bytes()).decode()
    return card.replace(f"]({sample})", f"](data:image/png;base64,{data})")
