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
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT

VARIANTS = {
    "default": ({"ATEN_CPU_CAPABILITY": "default"}, "DEFAULT"),
    "avx2": ({"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX2"),
}


@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.Popen, Path]]]:
    """Every variant's `pytest -m cross_batch`, started at once: much of a run is importing and collecting on
    one core, so the variants overlap instead of queueing. Each writes to its own log and temp folder."""
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    runs = {}
    for variant, (settings, _) in VARIANTS.items():
        env = {**os.environ, **settings, "PYTHONPATH": pythonpath}
        env.pop("PYTEST_CURRENT_TEST", None)
        folder = tmp_path_factory.mktemp(f"isa_{variant}")
        cmd = [sys.executable, "-m", "pytest", "-m", "cross_batch", "--tb=short", "-p", "no:cacheprovider"]
        cmd += [f"--basetemp={folder / 'tmp'}", "tests"]
        log = folder / "pytest.log"
        with open(log, "w") as out:
            runs[variant] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT), log)
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cross_batch_subset_passes_under(variant: str, variant_runs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    settings, capability = VARIANTS[variant]
    proc, log = variant_runs[variant]
    returncode = proc.wait(timeout=600)
    output = log.read_text()
    tail = "\n".join(output.splitlines()[-60:])
    assert returncode == 0, f"`pytest -m cross_batch` failed with {settings} (exit {returncode}):\n{tail}"
    assert f"cpu capability: {capability}" in output, f"the subprocess did not run on {capability} kernels:\n{tail}"
    assert " passed" in output and " deselected" in output, tail
