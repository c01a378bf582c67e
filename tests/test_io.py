"""lightning_dr2.image_io: atomic writes, PNG encode/decode round trips, tensor conversion and resizing."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_dr2.files import atomic_write, write_json, write_table
from lightning_dr2.image_io import (
    encode_png,
    image_to_tensor,
    images_to_tensor,
    read_image,
    resize,
    to_uint8,
    to_uint8_images,
    write_png,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("data", [b"\x00bytes", "text \u00e9", lambda tmp: tmp.write_bytes(b"from a callback")])
def test_atomic_write_writes_and_leaves_no_temp_file(tmp_path: Path, data) -> None:
    target = tmp_path / "sub" / "out.bin"  # the folder is created
    assert atomic_write(target, data) == target
    expected = b"from a callback" if callable(data) else data.encode() if isinstance(data, str) else data
    assert target.read_bytes() == expected
    assert leftovers(target.parent) == []


def test_atomic_write_never_leaves_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old, complete")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # even an interrupt: the old file stays, the temporary one goes

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old, complete"
    assert leftovers(tmp_path) == []
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "new.bin", lambda tmp: 1 / 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_keeps_the_umask_mode(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    assert atomic_write(tmp_path / "atomic", b"x").stat().st_mode == plain.stat().st_mode


def test_write_json_and_table(tmp_path: Path) -> None:
    obj = {"a": [1, 2.5], "b": None}
    assert json.loads(write_json(tmp_path / "x.json", obj).read_text()) == obj
    rows = [{"name": "a", "psnr": 1.5}, {"name": "b", "ssim": 0.5}]
    with open(write_table(tmp_path / "x.csv", rows), newline="") as fh:
        read = list(csv.DictReader(fh))
    assert read == [{"name": "a", "psnr": "1.5", "ssim": ""}, {"name": "b", "psnr": "", "ssim": "0.5"}]
    assert write_table(tmp_path / "empty.csv", []) is None and not (tmp_path / "empty.csv").exists()
    assert leftovers(tmp_path) == []


def test_png_round_trip_is_lossless_and_deterministic(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    path = write_png(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(path), rgb)  # channel order kept (OpenCV is BGR inside)
    assert path.read_bytes() == encode_png(rgb) == encode_png(rgb.copy())
    assert leftovers(tmp_path) == []


def test_tensor_conversions_invert_each_other() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
    batch = images_to_tensor(list(rgb))
    assert batch.shape == (2, 3, 5, 6) and batch.dtype == torch.float32
    assert float(batch.min()) >= -1 and float(batch.max()) <= 1
    torch.testing.assert_close(batch[1], image_to_tensor(rgb[1]))
    for back, original in zip(to_uint8_images(batch), rgb, strict=True):
        np.testing.assert_array_equal(back, original)
    np.testing.assert_array_equal(to_uint8(batch).permute(0, 2, 3, 1).numpy(), rgb)
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.full((1, 3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="uint8"):
        images_to_tensor([rgb[0].astype(np.float32)])


def test_resize_is_a_no_op_at_size_and_antialiased_down() -> None:
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    assert resize(x, 8) is x
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2.0 - 1  # +-1 at every pixel
    small = resize(checker.expand(1, 3, 16, 16), 4)
    assert small.shape == (1, 3, 4, 4) and float(small.abs().max()) < 0.1  # averaged, not aliased to +-1


def test_nothing_written_under_the_final_name_until_complete(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    seen: list[bool] = []

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"part")
        seen.append(target.exists())
        with open(tmp, "ab") as fh:
            fh.write(b" rest")

    atomic_write(target, write)
    assert seen == [False] and target.read_bytes() == b"part rest"
    assert os.listdir(tmp_path) == ["big.bin"]
