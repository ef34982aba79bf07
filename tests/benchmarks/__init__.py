"""`make bench`: speed and memory figures as ratios against a baseline measured in the same run.

Each `bench_*.py` module here has `run(quick: bool, smoke: bool) -> list[Result]`. Results are
written to `.graft/bench/<name>.json` and printed as one table. Nothing here
asserts a time: targets are recorded next to the figures (`target`, `met`).
"""
