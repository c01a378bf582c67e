"""Issue 15 in the jobs: inputs and outputs that share folders, undecodable files, a disk that fills up, caches
whose files are not what their manifest says, exports of both training jobs. Each case ends in a correct result,
a counted skip or a message (exit 2), never a traceback or a silently wrong number."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DDPM_NET, TINY_ENHANCER_RUN, build_tiny_testset
from PIL import Image

from lightning_dr2.cli import main
from lightning_dr2.config.loader import ConfigError
from lightning_dr2.config.pipeline import CacheConfig
from lightning_dr2.config.recipes import load_config, schema_for
from lightning_dr2.datasets.enhancer_data import EnhancerDataModule, EnhancerPairs, PairAugment, Setting
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.diffusion import DiffusionConfig
from lightning_dr2.image_io import list_images, read_image
from lightning_dr2.jobs.dr2_cache import run_cache
from lightning_dr2.jobs.train_enhancer import check_cache_unet
from lightning_dr2.nets.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")

RESTORE = ["dr2.N=4", "dr2.tau=6", "dr2.omega=8", "enhancer.name=none", "batch_size=2", "num_workers=0"]
CACHE = ["settings=[{N: 4, tau: 6, omega: 8}]", "batch_size=2", "num_workers=0", "progress_bar=false"]


def faces(folder: Path, names: list[str], size: int = 32, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(render_face(seed + i, size)).save(folder / name)
    return folder


def restore(unet: Path, input_dir: Path, output_dir: Path, capsys, *extra: str) -> tuple[int, str, str]:
    argv = ["restore", "--input", str(input_dir), "--output", str(output_dir), f"unet_weights={unet}", *RESTORE]
    rc = main([*argv, "progress_bar=false", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------------------- restore


def test_restore_into_a_folder_that_contains_the_input(unet_file: Path, tmp_path: Path, capsys) -> None:
    outer = tmp_path / "outer"
    faces(outer / "inner", ["a.png", "b.png"])
    rc, out, err = restore(unet_file, outer / "inner", outer, capsys)
    assert rc == 0, err
    assert "restored 2 images" in out
    assert sorted(p.name for p in (outer / "restored").iterdir()) == ["a.png", "b.png"]
    # ... but never an input inside a folder the job writes its outputs to
    rc, _, err = restore(unet_file, outer / "restored", outer, capsys)
    assert rc == 2 and "would overwrite the inputs" in err and "Traceback" not in err


def test_restore_skips_an_earlier_restores_output_folder_and_says_so(unet_file: Path, tmp_path: Path, capsys) -> None:
    src = faces(tmp_path / "in", ["a.png", "b.png"])
    assert restore(unet_file, src, src / "out", capsys)[0] == 0  # in/out/restored, in/out/dr2: outputs inside in/
    rc, out, err = restore(unet_file, src, tmp_path / "again", capsys)
    assert rc == 0, err
    assert "restored 2 images" in out and f"skipped {src / 'out'}: it holds an earlier job's outputs" in out
    assert sorted(p.name for p in (tmp_path / "again" / "restored").iterdir()) == ["a.png", "b.png"]
    rc, _, err = restore(unet_file, src / "out", tmp_path / "third", capsys)  # an output folder as the input
    assert rc == 2 and f"is the output folder of an earlier job ({src / 'out' / 'manifest.json'})" in err


def test_restore_counts_and_lists_an_animated_gif(unet_file: Path, tmp_path: Path, capsys) -> None:
    src = faces(tmp_path / "in", ["a.png"])
    frames = [Image.fromarray(render_face(s, 32)) for s in (5, 6)]
    frames[0].save(src / "clip.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rc, out, err = restore(unet_file, src, tmp_path / "out", capsys)
    assert rc == 0, err
    assert "restored 1 images" in out and "1 inputs unusable" in out and "clip.gif: not an image file" in out
    assert "clip.gif\tbad\tnot an image file" in (tmp_path / "out" / "bad_files.txt").read_text()


def test_a_disk_that_fills_up_during_restore_is_a_message_and_the_rerun_finishes(
    unet_file: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_dr2.callbacks import writer

    src = faces(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    real_write, writes = writer.write_png, []

    def write_png(path, rgb):
        writes.append(path)
        if len(writes) == 5:  # the second batch (2 images x DR2 + final each per batch): its first file
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, rgb)

    monkeypatch.setattr(writer, "write_png", write_png)
    rc, _, err = restore(unet_file, src, out, capsys)
    assert rc == 2 and "Traceback" not in err
    assert f"{writes[-1]}: no space left on the device" in err and "free space there" in err
    monkeypatch.setattr(writer, "write_png", real_write)
    rc, stdout, err = restore(unet_file, src, out, capsys)
    assert rc == 0, err
    assert "restored 1 images (2 reused" in stdout  # the first batch was finished and recorded: nothing lost
    assert sorted(p.name for p in (out / "restored").iterdir()) == ["a.png", "b.png", "c.png"]


# -------------------------------------------------------------------------------- undecodable files


def corrupt(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:60])  # a truncated PNG
    return path


def test_a_corrupt_prediction_file_is_a_message_naming_it(tmp_path: Path, capsys) -> None:
    testset = build_tiny_testset(tmp_path, n=3)
    predictions = tmp_path / "gfpgan"
    shutil.copytree(testset / "hq", predictions / "x4_mild")
    bad = corrupt(predictions / "x4_mild" / "001.png")
    argv = [
        "eval",
        "eval_celeba_test",
        f"sets=[{{name: tiny, root: {testset}, splits: [x4_mild]}}]",
        "settings=[]",
        f"predictions.GFPGAN={predictions}",
        "metrics=[psnr]",
        f"runs_dir={tmp_path / 'runs'}",
        "wandb.mode=disabled",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "cannot be decoded" in err and "Traceback" not in err


def test_a_corrupt_file_in_the_enhancers_dr2_cache_is_skipped_and_counted(tmp_path: Path, caplog) -> None:
    hq = faces(tmp_path / "hq", ["a.png", "b.png", "c.png"], size=64)
    dr2 = faces(tmp_path / "cache" / "dr2", ["a.png", "b.png", "c.png"], size=32)
    bad = corrupt(dr2 / "b.png")
    pairs = EnhancerPairs(hq, list_images(hq), 64, PairAugment((0.5, 1.0)), [Setting(4, 22)], dr2_root=dr2)
    items = [pairs[i] for i in range(3)]
    assert [it["index"] for it in items] == [0, 2, 2]  # b's pair replaced by the next readable one
    assert pairs.bad_files == {str(hq / "b.png")} and str(bad) in caplog.text


def test_a_data_root_whose_only_image_is_undecodable_says_so(tmp_path: Path, capsys) -> None:
    root = tmp_path / "faces"
    root.mkdir()
    (root / "only.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["train", "ddpm_tiny", *TINY_DDPM_NET, f"data.root={root}", "data.synthetic=false"]
    assert main([*argv, f"runs_dir={tmp_path / 'runs'}", "trainer.max_steps=1", "trainer.progress_bar=false"]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'only.png'}" in err and "can be decoded" in err and "Traceback" not in err
    assert "lower data.batch_size" not in err  # the batch size is not the problem


# ------------------------------------------------------------------------- caches and their manifests


def cache(unet: Path | str, hq: Path, out: Path, *extra: str):
    cfg = load_config(None, [f"unet_weights={unet}", *CACHE, *extra], schema=CacheConfig)
    cfg.hq, cfg.out = str(hq), str(out)
    return run_cache(cfg)


def enhancer_cfg(hq: Path, dr2_root: Path, *extra: str):
    overrides = [*TINY_ENHANCER_RUN, "data.mode=folder", f"data.hq_root={hq}", f"data.dr2_root={dr2_root}", *extra]
    return load_config("enhance_tiny", overrides, schema=schema_for("enhance_tiny"))


def test_each_sample_folder_of_the_cache_is_checked_against_the_unet(unets, tmp_path: Path) -> None:
    hq, out = faces(tmp_path / "hq", ["a.png", "b.png"], size=64), tmp_path / "cache"
    cache(unets["a"], hq, out, "samples_per_image=2")  # dr2/ and dr2_s1/ by UNet a
    cache(unets["b"], hq, out)  # dr2/ again by UNet b; dr2_s1/ keeps UNet a's outputs
    check_cache_unet(enhancer_cfg(hq, out / "dr2", f"dr2.unet_weights={unets['b']}", "data.size=64"))
    with pytest.raises(ConfigError, match=r"(?s)dr2_s1 was made by the UNet with sha256.*unet1\.pt has sha256"):
        check_cache_unet(enhancer_cfg(hq, out / "dr2_s1", f"dr2.unet_weights={unets['b']}", "data.size=64"))


def test_a_clash_in_the_cache_never_pairs_a_face_with_another_faces_dr2(unets, tmp_path: Path, caplog) -> None:
    hq = tmp_path / "hq"
    faces(hq, ["a.jpg"], size=64, seed=0)
    faces(hq, ["a.png", "b.png"], size=64, seed=10)
    out = tmp_path / "cache"
    assert [rel for rel, _ in cache(unets["a"], hq, out).bad] == ["a.png"]  # a.jpg made dr2/a.png first
    cfg = enhancer_cfg(hq, out / "dr2", "data.size=64", "data.val_n=1", f"dr2.unet_weights={unets['a']}")
    from lightning_dr2.jobs.train_enhancer import build_datamodule

    data = build_datamodule(cfg, None)
    data.setup()
    paired = {f.name for f in data.train_set.files + data.val_set.files}
    assert paired == {"a.jpg", "b.png"} and "a.png: " in caplog.text and "was made from a.jpg" in caplog.text


def test_a_stray_file_in_a_cache_is_not_paired(unets, tmp_path: Path) -> None:
    hq, out = faces(tmp_path / "hq", ["a.png"], size=64), tmp_path / "cache"
    cache(unets["a"], hq, out)
    faces(hq, ["stray.png"], size=64, seed=7)
    faces(out / "dr2", ["stray.png"], size=64, seed=8)  # on disk, but not in the cache's manifest
    data = EnhancerDataModule(str(hq), 64, 1, PairAugment((0.5, 1.0)), [Setting(4, 6)], dr2_root=str(out / "dr2"))
    with pytest.raises(FileNotFoundError, match=r"stray.png: not listed in .*manifest.json"):
        data.setup()


def test_dr2_outputs_of_another_size_than_the_recipes_unet_are_refused(tmp_path: Path) -> None:
    hq, out = faces(tmp_path / "hq", ["a.png"], size=64), tmp_path / "cache"
    net16 = [f"net.{o}" for o in ("image_size=16", "channel_mult=1,2", "attention_resolutions=8", "num_channels=32")]
    cache("random", hq, out, *net16, "net.num_head_channels=16")  # a random 16 px UNet: sha256 "random"
    cfg = enhancer_cfg(hq, out / "dr2", "data.size=32")  # enhance_tiny: a random 32 px UNet
    with pytest.raises(ConfigError, match=r"holds DR2 outputs of \[16\] px .* works at 32 px"):
        check_cache_unet(cfg)
    (out / "manifest.json").unlink()  # no manifest: each file's size is checked as it is read
    pairs = EnhancerPairs(hq, list_images(hq), 32, PairAugment((0.5, 1.0)), [Setting(4, 6)], dr2_root=out / "dr2")
    pairs.unet_size = 32
    with pytest.raises(ValueError, match=r"dr2/a.png is 16 px but the recipe's DR2 UNet works at 32 px"):
        pairs[0]


# -------------------------------------------------------------------------------------------- export


def test_export_of_an_enhancer_checkpoint(tmp_path: Path, capsys) -> None:
    hq = faces(tmp_path / "hq", [f"{i}.png" for i in range(4)], size=32)
    argv = ["train-enhancer", "enhance_tiny", *TINY_ENHANCER_RUN, f"data.hq_root={hq}", "trainer.max_steps=1"]
    assert main([*argv, f"runs_dir={tmp_path}", "run=r", "checkpoint.every_n_steps=1", "data.val_n=1"]) == 0
    ckpt = tmp_path / "enhance_tiny" / "r" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["export", str(ckpt), "--out", str(tmp_path / "e.pt")]) == 0, capsys.readouterr().err
    from lightning_dr2.exports import load_restorer

    net = load_restorer("sparnethd", str(tmp_path / "e.pt")).module  # the export's JSON picks the network
    exported = torch.load(tmp_path / "enhance_tiny" / "r" / "export" / "enhancer_ema.pt", weights_only=True)
    again = torch.load(tmp_path / "e.pt", weights_only=True)
    assert exported.keys() == again.keys() and all(torch.equal(exported[k], again[k]) for k in exported)
    x = torch.from_numpy(read_image(hq / "0.png")).permute(2, 0, 1)[None].float() / 127.5 - 1
    assert torch.isfinite(net(x)).all()


def test_export_refuses_the_exploded_weights_of_a_diverged_run(tmp_path: Path, capsys) -> None:
    flags = {"image_size": 16, "num_channels": 32, "channel_mult": "1,2", "attention_resolutions": "8"}
    flags |= {"num_head_channels": 16, "learn_sigma": True}
    state = {k: v * 1e30 if v.is_floating_point() else v for k, v in UNet.from_flags(flags).state_dict().items()}
    ckpt = tmp_path / "last.ckpt"
    hparams = {"net": flags, "diffusion": DiffusionConfig().to_dict()}
    torch.save({"hyper_parameters": hparams, "callbacks": {"EMA": {"weights": state}}, "global_step": 9}, ckpt)
    assert np.isfinite(max(float(v.abs().max()) for v in state.values() if v.is_floating_point()))
    assert main(["export", str(ckpt), "--out", str(tmp_path / "u.pt")]) == 2
    err = capsys.readouterr().err
    assert "the training diverged; refusing to write them" in err and "Traceback" not in err
    assert not (tmp_path / "u.pt").exists()


def test_checkpoints_never_hold_exploded_weights(tmp_path: Path) -> None:
    from lightning_dr2.jobs.train_ddpm import build_module
    from lightning_dr2.modules.guards import NonFiniteTrainingError

    module = build_module(load_config("ddpm_tiny", TINY_DDPM_NET))
    with torch.no_grad():
        next(module.net.parameters()).mul_(1e30)
    with pytest.raises(NonFiniteTrainingError, match="diverged"):
        module.on_save_checkpoint({})
