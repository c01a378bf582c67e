"""The DR2 training-pair cache: each face's outputs once with a drawn (N, tau) from the recipe's list,
reused only on a matching fingerprint, extra samples differing, and readable by the enhancer data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from contract import assert_uint8_close
from PIL import Image

from lightning_dr2.cli import main
from lightning_dr2.config.loader import ConfigError
from lightning_dr2.config.pipeline import CacheConfig
from lightning_dr2.config.recipes import load_config
from lightning_dr2.datasets.enhancer_data import EnhancerPairs, PairAugment, Setting
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.image_io import list_images
from lightning_dr2.jobs.dr2_cache import run_cache
from lightning_dr2.provenance import ReuseRefused

TINY_SETTINGS = "settings=[{N: 4, tau: 6, omega: 8},{N: 8, tau: 5, omega: 7},{N: 2, tau: 4, omega: 6}]"
ALLOWED = {(4, 6, 8), (8, 5, 7), (2, 4, 6)}


def _cfg(unet: Path, hq: Path, out: Path, *extra: str):
    cfg = load_config(
        None,
        [f"unet_weights={unet}", TINY_SETTINGS, "batch_size=2", "num_workers=0", "progress_bar=false", *extra],
        schema=CacheConfig,
    )
    cfg.hq, cfg.out = str(hq), str(out)
    return cfg


def _faces(folder: Path, n: int = 3) -> None:
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(render_face(i, 64)).save(folder / ("sub" if i == 0 else "") / f"f{i}.png")


def _records(out: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads((out / "manifest.json").read_text())["images"]}


def _png(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def test_cache_writes_each_output_once_with_a_drawn_setting_and_reuses_it(unets, tmp_path):
    hq, out = tmp_path / "hq", tmp_path / "cache"
    _faces(hq)
    first = run_cache(_cfg(unets["a"], hq, out, "samples_per_image=2"))
    assert (first.made, first.reused, first.bad) == (6, 0, []) and first.images_per_second > 0
    rels = ["f1.png", "f2.png", "sub/f0.png"]
    records = _records(out)
    assert sorted(records) == sorted(f"{d}/{rel}" for d in ("dr2", "dr2_s1") for rel in rels)
    for name, rec in records.items():
        assert rec["status"] == "ok" and (out / rec["file"]).is_file() and rec["file"] == name
        assert (rec["N"], rec["tau"], rec["omega"]) in ALLOWED
        assert rec["source"] == name.split("/", 1)[1] and len(rec["input_sha256"]) == 64
        assert len(rec["unet_sha256"]) == 64 and rec["diffusion"]["steps"] > 0 and rec["enhancer"] == "none"
        assert _png(out / rec["file"]).shape == (64, 64, 3)
    assert len({r["seed"] for r in records.values()}) == 6
    assert len({(r["N"], r["tau"]) for r in records.values()}) > 1  # drawn per output, not one for the run
    for rel in rels:  # the second sample is another DR2 draw of the same face
        assert np.abs(_png(out / "dr2" / rel).astype(int) - _png(out / "dr2_s1" / rel)).mean() > 1.0

    again = run_cache(_cfg(unets["a"], hq, out, "samples_per_image=2"))
    assert (again.made, again.reused) == (0, 6)
    assert _records(out) == records

    # Independent of batching and process count: 2 processes with batches of 1 write each output once, and the
    # same images (to the contract's bound).
    two = tmp_path / "two"
    run_cache(_cfg(unets["a"], hq, two, "samples_per_image=2", "batch_size=1", "devices=2", "strategy=ddp_spawn"))
    assert {n: r["fingerprint"] for n, r in _records(two).items()} == {n: r["fingerprint"] for n, r in records.items()}
    assert sorted(str(p.relative_to(two)) for p in two.rglob("*.png")) == sorted(records)
    for name in records:
        assert_uint8_close(_png(two / name), _png(out / name), msg=f"{name}: 2 processes, batch 1 vs 1, batch 2:")


def test_changed_settings_list_or_weights_recompute_and_strict_names_the_change(unets, tmp_path):
    hq, out = tmp_path / "hq", tmp_path / "cache"
    _faces(hq, 2)
    run_cache(_cfg(unets["a"], hq, out))
    with pytest.raises(ReuseRefused, match="unet_sha256"):
        run_cache(_cfg(unets["b"], hq, out, "reuse=strict"))
    other_weights = run_cache(_cfg(unets["b"], hq, out))
    assert (other_weights.made, other_weights.recomputed, other_weights.reused) == (2, 2, 0)
    fewer = run_cache(_cfg(unets["b"], hq, out, "settings=[{N: 4, tau: 6, omega: 8}]"))
    assert (fewer.made, fewer.recomputed) == (2, 2)
    assert {(r["N"], r["tau"], r["omega"]) for r in _records(out).values()} == {(4, 6, 8)}


def test_enhancer_folder_mode_reads_the_cache(unets, tmp_path):
    hq, out = tmp_path / "hq", tmp_path / "cache"
    _faces(hq)
    run_cache(_cfg(unets["a"], hq, out))
    pairs = EnhancerPairs(hq, list_images(hq), 64, PairAugment((0.5, 1.0)), [Setting(8, 35)], dr2_root=out / "dr2")
    assert pairs.missing_dr2() == []
    item = pairs[0]
    assert item["y"].shape == item["x"].shape == (3, 64, 64)


def test_cli_and_config_errors(unets, tmp_path, capsys):
    hq, out = tmp_path / "hq", tmp_path / "cache"
    _faces(hq, 1)
    args = [f"unet_weights={unets['a']}", TINY_SETTINGS, "num_workers=0", "progress_bar=false"]
    assert main(["dr2-cache", "--hq", str(hq), "--out", str(out), *args]) == 0
    assert "images/s" in capsys.readouterr().out and (out / "dr2" / "sub" / "f0.png").is_file()
    with pytest.raises(ConfigError, match="enhancer.name"):
        _cfg(unets["a"], hq, out, "enhancer.name=sparnethd")
    with pytest.raises(ConfigError, match="settings"):
        _cfg(unets["a"], hq, out, "settings=[]")
    with pytest.raises(ConfigError, match=r"settings\[0\]"):
        _cfg(unets["a"], hq, out, "settings=[{N: 4, tau: 6, omega: 200}]")


def test_enhancer_refuses_a_cache_made_by_another_unet(unets, tmp_path):
    from lightning_dr2.config.recipes import schema_for
    from lightning_dr2.jobs.train_enhancer import check_cache_unet, train_enhancer

    hq, out = tmp_path / "hq", tmp_path / "cache"
    _faces(hq)
    run_cache(_cfg(unets["a"], hq, out))

    def enhancer_cfg(unet: Path):
        overrides = ["data.mode=folder", f"data.hq_root={hq}", f"data.dr2_root={out / 'dr2'}", f"runs_dir={tmp_path}"]
        return load_config("enhance_tiny", [*overrides, f"dr2.unet_weights={unet}"], schema=schema_for("enhance_tiny"))

    check_cache_unet(enhancer_cfg(unets["a"]))  # the UNet that made the cache: accepted
    with pytest.raises(ConfigError, match=r"(?s)sha256.*dr2\.unet_weights=.*unet1\.pt.*Rebuild the cache") as err:
        train_enhancer(enhancer_cfg(unets["b"]))
    assert str(out / "manifest.json") in str(err.value)
    assert not (tmp_path / "enhance_tiny").exists()  # refused before a run directory was made
