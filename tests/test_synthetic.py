"""Synthetic faces: determinism, variety, alignment, resumable generation."""

from __future__ import annotations

import json
import logging
import os
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from lightning_dr2.cli import main
from lightning_dr2.datasets import generate_faces, render_face
from lightning_dr2.datasets.synthetic import face_seed
from lightning_dr2.image_io import read_image


def test_render_is_deterministic_per_seed():
    a = render_face(7, 32)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, render_face(7, 32))
    assert not np.array_equal(a, render_face(8, 32))
    assert render_face(7, 128).shape == (128, 128, 3)
    with pytest.raises(ValueError):
        render_face(0, 4)


def test_faces_are_varied():
    faces = [render_face(s, 32).astype(np.float32) for s in range(16)]
    diffs = [np.abs(a - b).mean() for a, b in combinations(faces, 2)]
    assert np.mean(diffs) > 40 and min(diffs) > 10
    # Skin tone: median brightness of a cheek/nose patch (below the eyes, above the mouth).
    skin = [np.median(f[16:21, 11:21].mean(-1)) for f in faces]
    assert max(skin) - min(skin) > 100


def test_faces_are_centred_like_ffhq():
    """Averaged over faces the image is nearly left-right symmetric, and the darkest row of the face
    (the eyes) is near FFHQ's 47% height: a cheap guard against layout regressions."""
    mean = np.mean([render_face(s, 64).astype(np.float32).mean(-1) for s in range(24)], 0)
    assert np.abs(mean - mean[:, ::-1]).mean() < 8
    rows = mean[20:40, 20:44].mean(1)  # 31%..62% of the height, central columns
    assert 0.42 <= (20 + np.argmin(rows) + 0.5) / 64 <= 0.52


def test_generate_faces_writes_and_resumes(tmp_path: Path, capsys, caplog):
    out = tmp_path / "faces"
    paths = generate_faces(out, n=5, size=16, seed=3)
    assert [p.name for p in paths] == [f"{i:05d}.png" for i in range(5)]
    assert json.loads((out / "manifest.json").read_text())["n"] == 5
    np.testing.assert_array_equal(read_image(paths[2]), render_face(face_seed(3, 2), 16))

    stamps = [p.stat().st_mtime_ns for p in paths]
    assert generate_faces(out, n=5, size=16, seed=3) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps

    before = paths[4].read_bytes()
    os.remove(paths[4])
    with caplog.at_level(logging.INFO, logger="lightning_dr2.datasets.synthetic"):
        assert main(["synth", "--n", "5", "--size", "16", "--out", str(out), "--seed", "3"]) == 0
    assert "1 written, 4 already present" in caplog.text
    assert f"{out}: 5 synthetic faces at 16x16" in capsys.readouterr().out
    assert paths[4].read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no leftover tmp files

    with pytest.raises(ValueError, match="size"):
        generate_faces(out, n=5, size=32, seed=3)


def test_generate_faces_is_independent_of_workers(tmp_path: Path):
    serial = generate_faces(tmp_path / "serial", n=64, size=8, seed=1, workers=1)
    parallel = generate_faces(tmp_path / "parallel", n=64, size=8, seed=1, workers=2)
    assert [p.read_bytes() for p in serial] == [p.read_bytes() for p in parallel]
    assert face_seed(0, 1) != face_seed(1, 0)
