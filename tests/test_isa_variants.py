"""The cross-batch / cross-process tests again, under other CPU instruction sets.

PyTorch picks its CPU kernels (`ATEN_CPU_CAPABILITY`) and oneDNN its convolution code
(`ONEDNN_MAX_CPU_ISA`) once, at process start, so each variant runs `pytest -m cross_batch` in a
subprocess. A developer's AVX-512 machine thus also checks what an AVX2-only or a plain machine
computes: the numerical contract (docs/reproducibility.md) must hold on every CPU, not a lucky one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

VARIANTS = {
    "default": ({"ATEN_CPU_CAPABILITY": "default"}, "DEFAULT"),
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX2"),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cross_batch_subset_passes_under(variant: str) -> None:
    settings, capability = VARIANTS[variant]
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **settings, "PYTHONPATH": pythonpath}
    env.pop("PYTEST_CURRENT_TEST", None)
    cmd = [sys.executable, "-m", "pytest", "-m", "cross_batch", "--tb=short", "-p", "no:cacheprovider", "tests"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    tail = "\n".join(output.splitlines()[-60:])
    assert proc.returncode == 0, f"`pytest -m cross_batch` failed with {settings} (exit {proc.returncode}):\n{tail}"
    assert f"cpu capability: {capability}" in output, f"the subprocess did not run on {capability} kernels:\n{tail}"
    assert " passed" in output and " deselected" in output, tail
