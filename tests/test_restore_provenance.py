"""Restore outputs know what made them: reuse only on a matching fingerprint, one output per input,
outputs never read back as inputs, flagged (non-finite/constant) outputs never count as finished,
non-square inputs handled by a stated policy, unusable output folders named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_UNET_FLAGS, tiny_restore_cfg, tiny_unet
from PIL import Image

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.datasets.synthetic import render_face
from lightning_dr2.image_io import fit_square
from lightning_dr2.jobs.restore import run_restore
from lightning_dr2.outputs import OutputError
from lightning_dr2.provenance import ReuseRefused


def _unet_file(root: Path, seed: int, nan: bool = False) -> Path:
    net = tiny_unet(seed=seed)
    if nan:
        with torch.no_grad():
            next(net.parameters()).fill_(float("nan"))
    path = root / f"unet{seed}{'_nan' if nan else ''}.pt"
    torch.save(net.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(TINY_UNET_FLAGS))
    return path


@pytest.fixture(scope="module")
def unets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("unets")
    return {"a": _unet_file(root, 0), "b": _unet_file(root, 1), "nan": _unet_file(root, 2, nan=True)}


def _cfg(unet: Path, inputs: Path, outputs: Path, *extra: str):
    return tiny_restore_cfg(unet, inputs, outputs, "enhancer.name=none", "enhancer.size=64", *extra)


def _faces(folder: Path, n: int = 3, size: int = 64) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.fromarray(render_face(i, size)).save(folder / f"f{i}.png")
        names.append(f"f{i}.png")
    return names


def _records(outputs: Path) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads((outputs / "manifest.json").read_text())["images"]}


def test_rerun_reuses_only_what_the_same_settings_made(unets, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _faces(inputs)
    first = run_restore(_cfg(unets["a"], inputs, outputs))
    assert (first.restored, first.skipped) == (3, 0)
    fingerprints = {k: r["fingerprint"] for k, r in _records(outputs).items()}

    same = run_restore(_cfg(unets["a"], inputs, outputs))
    assert (same.restored, same.skipped, same.recomputed) == (0, 3, 0)

    other_setting = run_restore(_cfg(unets["a"], inputs, outputs, "dr2.tau=5", "dr2.omega=7"))
    assert (other_setting.restored, other_setting.skipped, other_setting.recomputed) == (3, 0, 3)
    records = _records(outputs)
    assert {r["tau"] for r in records.values()} == {5}, "the manifest names the settings that made each file"
    assert all(records[k]["fingerprint"] != fingerprints[k] for k in records)

    other_weights = run_restore(_cfg(unets["b"], inputs, outputs, "dr2.tau=5", "dr2.omega=7"))
    assert other_weights.recomputed == 3
    sha = {r["unet_sha256"] for r in _records(outputs).values()}
    assert len(sha) == 1 and sha != {records["f0.png"]["unet_sha256"]}


def test_changed_input_is_recomputed_alone(unets, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _faces(inputs)
    run_restore(_cfg(unets["a"], inputs, outputs))
    Image.fromarray(render_face(42, 64)).save(inputs / "f1.png")  # same name, new content
    again = run_restore(_cfg(unets["a"], inputs, outputs))
    assert (again.restored, again.skipped, again.recomputed) == (1, 2, 1)


def test_strict_reuse_refuses_and_names_the_change(unets, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _faces(inputs, n=1)
    run_restore(_cfg(unets["a"], inputs, outputs))
    with pytest.raises(ReuseRefused, match=r"changed: .*N"):
        run_restore(_cfg(unets["a"], inputs, outputs, "dr2.N=2", "reuse=strict"))
    assert run_restore(_cfg(unets["a"], inputs, outputs, "reuse=strict")).skipped == 1


def test_outputs_never_become_inputs_and_names_never_clash(unets, tmp_path):
    inputs = tmp_path / "faces"
    _faces(inputs, n=2)
    Image.fromarray(render_face(7, 64)).convert("RGB").save(inputs / "f0.jpg")  # f0.jpg and f0.png -> f0.png
    outputs = inputs / "restored_here"  # the output folder inside the input folder
    first = run_restore(_cfg(unets["a"], inputs, outputs))
    assert first.restored == 2
    assert [name for name, _ in first.bad] == ["f0.png"]  # sorted: f0.jpg claims f0.png first
    assert "rename one of them" in first.bad[0][1]
    again = run_restore(_cfg(unets["a"], inputs, outputs))
    assert again.restored == 0 and again.skipped == 2, "the outputs were not picked up as new inputs"
    written = sorted(p.relative_to(outputs / "restored").as_posix() for p in (outputs / "restored").rglob("*.png"))
    assert written == ["f0.png", "f1.png"]


def test_non_finite_outputs_are_flagged_not_finished(unets, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _faces(inputs, n=2)
    summary = run_restore(_cfg(unets["nan"], inputs, outputs))
    assert summary.restored == 0 and len(summary.bad) == 2
    assert all("non-finite" in reason for _, reason in summary.bad)
    assert not list((outputs / "restored").rglob("*.png")) if (outputs / "restored").exists() else True
    assert {r["status"] for r in _records(outputs).values()} == {"flagged"}
    assert "flagged" in (outputs / "bad_files.txt").read_text()
    # a fixed model recomputes them: they were never marked finished
    assert run_restore(_cfg(unets["a"], inputs, outputs)).restored == 2
    assert not (outputs / "bad_files.txt").exists()


def test_non_square_and_tiny_inputs_follow_the_policy_and_are_recorded(unets, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    Image.fromarray(render_face(1, 300)[:80]).save(inputs / "wide.png")  # 300 x 80
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(inputs / "dot.png")
    summary = run_restore(_cfg(unets["a"], inputs, outputs))
    assert summary.restored == 2 and summary.reshaped == 1 and summary.tiny == 1
    records = _records(outputs)
    assert records["wide.png"]["input_size"] == [80, 300] and records["wide.png"]["reshaped"] == "center_crop"
    assert records["dot.png"]["reshaped"] == "none"
    # another policy is another setting: every output is made again (square ones too, to stay simple and safe)
    assert run_restore(_cfg(unets["a"], inputs, outputs, "input_policy=pad")).recomputed == 2
    assert _records(outputs)["wide.png"]["reshaped"] == "pad"


def test_fit_square_policies():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)  # C=2, H=3, W=5
    crop = fit_square(x, "center_crop")
    assert crop.shape == (2, 3, 3) and torch.equal(crop, x[:, :, 1:4])
    pad = fit_square(x, "pad")
    assert pad.shape == (2, 5, 5) and torch.equal(pad[:, 1:4], x) and torch.equal(pad[:, 0], x[:, 0])
    assert fit_square(x, "stretch") is x
    with pytest.raises(ValueError, match="input_policy"):
        fit_square(x, "squash")


def test_unusable_output_folder_is_named(unets, tmp_path):
    inputs = tmp_path / "in"
    _faces(inputs, n=1)
    a_file = tmp_path / "out.txt"
    a_file.write_text("not a folder")
    with pytest.raises(OutputError, match="--output .*out.txt is a file, not a folder"):
        run_restore(_cfg(unets["a"], inputs, a_file))
    with pytest.raises(ConfigError, match="input_policy"):
        run_restore(_cfg(unets["a"], inputs, tmp_path / "o", "input_policy=squash"))


def test_read_only_output_folder_is_named(unets, tmp_path, monkeypatch):
    """A folder the job may not write (simulated: the suite runs as root, which chmod does not stop; real
    read-only and full mounts: test_reliability_outputs.py)."""
    from lightning_dr2 import outputs

    inputs = tmp_path / "in"
    _faces(inputs, n=1)

    def refused(folder: Path) -> None:
        raise PermissionError(13, "Permission denied", str(folder / ".write-test"))

    monkeypatch.setattr(outputs, "probe_write", refused)
    with pytest.raises(OutputError, match=r"--output .*ro/.write-test: permission denied \(\[Errno 13\]"):
        run_restore(_cfg(unets["a"], inputs, tmp_path / "ro"))


def test_torn_manifest_line_is_skipped_with_file_and_line(unets, tmp_path, caplog):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _faces(inputs, n=2)
    run_restore(_cfg(unets["a"], inputs, outputs))
    (outputs / "manifest.rank0.jsonl").write_text('{"name": "f0.png", "status": "ok"\n')  # torn by a crash
    again = run_restore(_cfg(unets["a"], inputs, outputs))
    assert again.skipped == 2
    assert "manifest.rank0.jsonl line 1 is not valid JSON" in caplog.text
    assert not (outputs / "manifest.rank0.jsonl").exists()


def test_stale_outputs_are_listed(unets, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _faces(inputs, n=2)
    run_restore(_cfg(unets["a"], inputs, outputs))
    (inputs / "f1.png").unlink()
    run_restore(_cfg(unets["a"], inputs, outputs))
    manifest = json.loads((outputs / "manifest.json").read_text())
    assert manifest["stale"] == ["f1.png"] and [r["name"] for r in manifest["images"]] == ["f0.png"]
