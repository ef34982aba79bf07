"""The stages as plain functions `run(ctx) -> StageResult`, one module each.

Which stages exist, and what each holds and writes, is declared once in
`graftflow.core.stage_table`; pipelines/ wraps each in a Prefect flow from there.
"""
