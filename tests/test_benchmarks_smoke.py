"""Every benchmark runs at tiny sizes in the suite (`make bench BENCH_ARGS=--smoke`), so one that breaks
fails CI. The figures of such a run mean nothing and nothing here judges them: only that each benchmark
measured both sides (positive, finite values) and that its record serialises. The orchestration
benchmark's `graft run` subprocesses talk to the session's Prefect server instead of starting ephemeral ones."""

import importlib
import json
import math

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = ["store", "input_pipeline", "training_loop", "orchestration", "predict", "segmentation", "startup"]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_at_smoke_size(name, request):
    if name == "orchestration":
        request.getfixturevalue("prefect_api")
    results = importlib.import_module(f"tests.benchmarks.bench_{name}").run(quick=True, smoke=True)
    assert results
    for r in results:
        measured = [r.value] if r.baseline is None else [r.value, r.baseline]
        assert all(math.isfinite(v) and v > 0 for v in measured), (r.name, measured)
        assert json.loads(json.dumps(r.as_json()))["name"] == r.name


def test_every_benchmark_module_is_in_the_smoke_run():
    import pkgutil

    import tests.benchmarks as pkg

    modules = {m.name.removeprefix("bench_") for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("bench_")}
    assert modules == set(BENCHMARKS)
