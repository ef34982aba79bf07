"""Export: write the model in each requested format and prove it computes the same thing.

Each exporter's artifact is run on a real batch of held-out images and
compared with the eager model; a format that disagrees beyond
`export.tolerance` fails the stage instead of shipping a wrong model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from graftflow.core import storage
from graftflow.core.errors import StageError
from graftflow.core.models.build import build_model
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.stages.inputs import eval_loader, load_trained


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.export
    model, meta = load_trained(ctx)
    model.eval()
    example = _example_batch(ctx, meta, cfg.batch)
    with torch.no_grad():
        expected = model(example)
    exports, rows = [], []
    for name in cfg.formats:
        exporter = ctx.host.exporters.get(name, "export.formats")
        dest = ctx.out / name
        dest.mkdir()
        files = exporter.export(model, example, dest)
        got = exporter.verify(files, example, lambda: build_model(ctx.host, meta).eval())
        diff = float((got.float() - expected.float()).abs().max())
        if not diff <= cfg.tolerance:
            raise StageError(
                f"export.formats: '{name}' output differs from the eager model by {diff:.3g} "
                f"(tolerance {cfg.tolerance:g})"
            )
        rel = [str(f.relative_to(ctx.out)) for f in files]
        exports.append(
            {
                "format": name,
                "path": storage.join(ctx.run.stage_url("export"), rel[0]),
                "files": rel,
                "max_abs_diff": diff,
            }
        )
        rows.append({"format": name, "file": rel[0], "max_abs_diff": f"{diff:.2e}"})
    storage.write_json(str(ctx.out / "model.json"), meta)
    storage.write_json(str(ctx.out / "exports.json"), exports)
    return StageResult(
        outputs={"exports": "exports.json", "model_meta": "model.json"},
        summary={"exports": exports},
        artifacts=[
            Artifact(
                "table",
                "exports",
                f"exports verified on {len(example)} held-out images (tolerance {cfg.tolerance:g})",
                rows=rows,
            ),
            Artifact("markdown", "export-files", "links to the exported files", markdown=_links(ctx, exports)),
        ],
    )


def _example_batch(ctx: StageContext, meta: dict, size: int) -> torch.Tensor:
    for split in ("test", "val", "train"):
        loader, sel = eval_loader(ctx, split, meta["class_names"], size)
        if len(sel):
            return next(iter(loader))[0]
    raise StageError("export: no image of the task's classes to verify the exports on")


def _links(ctx: StageContext, exports: list[dict]) -> str:
    """A markdown list linking every exported file where it will live once the stage is published."""
    stage_url = ctx.run.stage_url("export")
    lines = [
        f"### Exported model — run `{ctx.run.run_id}`",
        "",
        "| format | file | max abs diff vs eager |",
        "|---|---|---|",
    ]
    for exp in exports:
        for rel in exp["files"]:
            url = storage.join(stage_url, rel)
            href = Path(url).resolve().as_uri() if storage.is_local(url) and "://" not in url else url
            lines.append(f"| {exp['format']} | [{rel}]({href}) | {exp['max_abs_diff']:.2e} |")
    lines += ["", f"Metadata: `{storage.join(stage_url, 'model.json')}`"]
    return "\n".join(lines)
