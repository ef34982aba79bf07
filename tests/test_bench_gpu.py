"""`make bench-gpu` on a machine without CUDA: one clear line and exit 2, before anything is measured.

On a CUDA machine the script measures instead; this test then has nothing to check and says so."""

import subprocess
import sys

import pytest
import torch

from tests.support import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: make bench-gpu measures instead of refusing")
def test_bench_gpu_refuses_in_one_line_without_cuda():
    proc = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.gpu"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: make bench-gpu needs a CUDA GPU"), proc.stderr
    assert proc.stdout == ""
