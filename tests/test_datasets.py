"""Image folders: listing, decoding of odd and broken files, ImageFolder, FaceDataModule."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import lightning_dr2.datasets as datasets
from lightning_dr2.datasets import FaceDataModule, ImageFolder, scan
from lightning_dr2.datasets.datamodule import ShardSampler, StreamSampler
from lightning_dr2.datasets.images import NoReadableImagesError
from lightning_dr2.image_io import BadImageError, list_images, read_image


def rgb(h: int = 12, w: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kwargs)
    return path


def truncated(path: Path, fmt: str) -> Path:
    buf = io.BytesIO()
    Image.fromarray(rgb(48, 48)).save(buf, fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "random.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (d / "empty.jpg").write_bytes(b"")
    return {
        "random": d / "random.png",
        "empty": d / "empty.jpg",
        "trunc_png": truncated(d / "trunc.png", "PNG"),
        "trunc_jpg": truncated(d / "trunc.jpg", "JPEG"),
    }


# -- listing --------------------------------------------------------------------------------------
def test_list_images_nested_sorted_and_filtered(tmp_path: Path):
    save(tmp_path / "b" / "x.png", rgb())
    save(tmp_path / "a" / "deep" / "y.JPG", rgb())
    save(tmp_path / "z.webp", rgb())
    save(tmp_path / "a" / "w.jpeg", rgb())
    save(tmp_path / ".hidden.png", rgb())  # e.g. macOS resource forks
    save(tmp_path / ".cache" / "c.png", rgb())
    (tmp_path / "notes.txt").write_text("not an image")
    rel = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert rel == ["a/deep/y.JPG", "a/w.jpeg", "b/x.png", "z.webp"]


def test_list_images_missing_and_empty_folders(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*\.png"):
        list_images(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="1 other files"):
        list_images(tmp_path / "text")


# -- decoding -------------------------------------------------------------------------------------
def test_read_image_grayscale_palette_and_alpha(tmp_path: Path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = read_image(save(tmp_path / "g.png", gray))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 1], gray)

    pal = Image.fromarray(rgb(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")))

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: composited on white, not alpha-dropped
    rgba[0, 2] = (0, 0, 0, 128)  # half transparent black over white: mid grey
    out = read_image(save(tmp_path / "a.png", rgba))
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert abs(int(out[0, 2, 0]) - 127) <= 1
    la = read_image(save(tmp_path / "la.png", np.stack([gray, np.full_like(gray, 255)], -1)))
    np.testing.assert_array_equal(la[..., 0], gray)


def test_read_image_16_bit_is_scaled_not_clipped(tmp_path: Path):
    gray16 = np.array([[0, 32768, 65535, 257]], np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[0, :, 0], [0, 128, 255, 1])
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[0, 0], rgb16[0, 1] = 65535, 32768
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16)
    out = read_image(tmp_path / "c16.png")
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (128, 128, 128)


def test_read_image_cmyk_and_exif_orientation(tmp_path: Path):
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red in CMYK
    out = read_image(tmp_path / "cmyk.jpg")
    assert out.shape == (4, 6, 3) and out[..., 0].mean() > 200 and out[..., 1:].mean() < 60

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(rgb(4, 10)).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "rot.jpg").shape == (10, 4, 3)


def test_bad_files_raise_bad_image_error(bad_files: dict[str, Path]):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for kind, path in bad_files.items():
        with pytest.raises(BadImageError) as info:
            read_image(path)
        assert info.value.path == str(path) and str(path) in str(info.value), kind
    with pytest.raises(BadImageError, match="empty"):
        read_image(bad_files["empty"])
    with pytest.raises(BadImageError, match="truncated"):
        read_image(bad_files["trunc_png"])
    with pytest.raises(BadImageError, match="not found"):
        read_image(bad_files["empty"].with_name("missing.png"))
    err = pickle.loads(pickle.dumps(BadImageError("x.png", "why")))  # crosses DataLoader workers
    assert (err.path, err.reason) == ("x.png", "why")


# -- ImageFolder ----------------------------------------------------------------------------------
def test_image_folder_item_crop_and_range(tmp_path: Path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = (0, 0, 255)  # cropped away
    arr[:, 10:30] = (255, 0, 0)  # the centre square
    arr[:, 30:] = (0, 255, 0)  # cropped away
    save(tmp_path / "wide.png", arr)
    save(tmp_path / "big.jpg", rgb(64, 64))
    ds = ImageFolder(tmp_path, 8)
    assert len(ds) == 2
    item = ds[1]
    assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
    assert item["index"] == 1 and item["path"].endswith("wide.png")
    torch.testing.assert_close(item["image"][:, 4, 4], torch.tensor([1.0, -1.0, -1.0]))
    assert ds[0]["image"].min() >= -1 and ds[0]["image"].max() <= 1


def test_image_folder_skips_bad_files(tmp_path: Path, bad_files: dict[str, Path], caplog):
    for i in range(3):
        save(bad_files["random"].parent / f"good{i}.png", rgb(seed=i))
    ds = ImageFolder(bad_files["random"].parent, 8)
    assert len(ds) == 7
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))]
    assert all(Path(it["path"]).name.startswith("good") for it in items)
    assert ds.bad_files == {str(p) for p in bad_files.values()}
    assert str(bad_files["trunc_jpg"]) in caplog.text
    assert ds[1]["path"] == items[1]["path"]  # substitutes are deterministic


def test_image_folder_all_bad_names_folder(bad_files: dict[str, Path]):
    ds = ImageFolder(bad_files["random"].parent, 8)
    with pytest.raises(NoReadableImagesError, match=str(bad_files["random"].parent)):  # a ValueError: exit 2
        ds[0]


def test_scan_and_validate_report_bad_files(tmp_path: Path, bad_files: dict[str, Path]):
    save(bad_files["random"].parent / "good.png", rgb())
    expected = {str(p) for p in bad_files.values()}
    found = scan(bad_files["random"].parent, progress=False)
    assert set(found) == expected and all(found.values())
    assert set(scan(list_images(bad_files["random"].parent), workers=2, progress=False)) == expected
    ds = ImageFolder(bad_files["random"].parent, 8)
    assert set(ds.validate(progress=False)) == expected and ds.bad_files == expected


def test_flip_follows_torch_seed(tmp_path: Path):
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = 255  # left half white: a flip moves it right
    save(tmp_path / "half.png", arr)
    ds = ImageFolder(tmp_path, 8, flip=True)

    def flips(seed: int) -> list[bool]:
        torch.manual_seed(seed)
        return [bool(ds[0]["image"][0, 0, -1] > 0) for _ in range(24)]

    assert flips(1) == flips(1)
    assert 0 < sum(flips(1)) < 24
    assert flips(1) != flips(2)
    assert not any(bool(ImageFolder(tmp_path, 8)[0]["image"][0, 0, -1] > 0) for _ in range(8))


# -- FaceDataModule -------------------------------------------------------------------------------
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i in range(40):
        save(tmp_path / "faces" / f"{i // 10}" / f"{i:03d}.png", rgb(6, 6, seed=i))
    return tmp_path / "faces"


def test_split_sizes():
    dm = FaceDataModule("unused", 8, 4, val_fraction=0.05, val_max=64)
    assert dm.split_sizes(10_000) == (9936, 64)
    assert dm.split_sizes(30) == (28, 2)
    assert dm.split_sizes(5) == (4, 1)
    assert dm.split_sizes(2) == (1, 1)
    assert dm.split_sizes(1) == (1, 0)
    assert FaceDataModule("unused", 8, 4, val_fraction=0.0).split_sizes(100) == (100, 0)


def test_datamodule_split_is_deterministic_and_disjoint(folder: Path):
    def split(seed: int) -> tuple[list[str], list[str]]:
        dm = FaceDataModule(str(folder), 8, 4, val_fraction=0.1, seed=seed)
        dm.setup("fit")
        return [str(p) for p in dm.train_set.files], [str(p) for p in dm.val_set.files]

    train, val = split(0)
    assert len(train) == 36 and len(val) == 4
    assert not set(train) & set(val) and set(train) | set(val) == {str(p) for p in list_images(folder)}
    assert split(0) == (train, val)
    assert split(1)[1] != val


def test_datamodule_loaders(folder: Path):
    dm = FaceDataModule(str(folder), 8, batch_size=4, val_fraction=0.1)
    dm.setup("fit")
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train.sampler, StreamSampler) and train.drop_last
    assert isinstance(val.sampler, ShardSampler) and not val.drop_last
    batch = next(iter(train))
    assert batch["image"].shape == (4, 3, 8, 8) and len(batch["path"]) == 4
    assert not dm.val_set.flip and dm.train_set.flip

    workers = FaceDataModule(str(folder), 8, batch_size=4, num_workers=1)
    workers.setup("fit")
    loader = workers.train_dataloader()
    assert loader.persistent_workers and not loader.pin_memory

    small = FaceDataModule(str(folder), 8, batch_size=64)
    small.setup("fit")
    with pytest.raises(ValueError, match="batch_size=64 is larger than the 38 training images"):
        small.train_dataloader()


def test_datamodule_generates_synthetic_faces(tmp_path: Path):
    root = tmp_path / "synthetic"
    dm = FaceDataModule(str(root), 16, batch_size=4, synthetic={"n": 12, "size": 16, "seed": 1})
    dm.prepare_data()
    assert len(list_images(root)) == 12 and (root / "manifest.json").is_file()
    dm.setup("fit")
    assert len(dm.train_set) + len(dm.val_set) == 12 and len(dm.val_set) == 1
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 3, 16, 16)


def test_datamodule_never_mixes_synthetic_faces_into_a_real_folder(folder: Path):
    with pytest.raises(ValueError, match=r"data\.root=.*faces holds images that are not our synthetic faces"):
        FaceDataModule(str(folder), 8, 4, synthetic={"n": 100, "size": 8}).prepare_data()
    assert len(list_images(folder)) == 40 and not (folder / "manifest.json").exists()


@pytest.mark.parametrize("state", ["missing", "empty", "no_images"])
def test_datamodule_without_synthetic_never_fills_a_missing_or_empty_root(tmp_path: Path, state: str):
    root = tmp_path / "ffhq_typo"
    if state != "missing":
        root.mkdir()
    if state == "no_images":
        (root / "notes.txt").write_text("x")
    dm = FaceDataModule(str(root), 8, 4)
    dm.prepare_data()
    with pytest.raises((FileNotFoundError, ValueError), match=r"data\.root=.*ffhq_typo.*data\.synthetic=true"):
        dm.setup("fit")
    assert not root.exists() or [p.name for p in root.iterdir()] in ([], ["notes.txt"])


def test_package_reexports_resolve():
    for name in datasets.__all__:
        assert getattr(datasets, name) is not None
    with pytest.raises(AttributeError):
        datasets.no_such_name  # noqa: B018


def test_stream_sampler_shards_resumes_and_reshuffles() -> None:
    shards = [list(StreamSampler(10, 3, num_replicas=3, rank=r, seed=5)) for r in range(3)]
    indices = [i for shard in shards for i, _ in shard]
    assert len(indices) == len(set(indices)) == 9  # 10 // 3 * 3 per epoch: no padding duplicates
    whole = list(StreamSampler(10, 12, num_replicas=1, seed=5))
    assert sorted(i for i, _ in whole[:10]) == list(range(10))  # an epoch is a permutation
    assert [i for i, _ in whole[:10]] != [i for i, _ in list(StreamSampler(10, 20, seed=5))[10:]]  # epochs differ
    # Positioned at sample 7 (a resumed run), the stream continues exactly where it was, across epochs.
    resumed = list(StreamSampler(10, 12, seed=5, position=lambda: 7))
    assert resumed == whole[7:]
    assert {f for _, f in StreamSampler(64, 64, seed=0)} == {False, True}
    assert {f for _, f in StreamSampler(64, 64, seed=0, flip=False)} == {False}
    assert sorted(i for r in range(3) for i in ShardSampler(10, 3, r)) == list(range(10))


def test_sampler_decides_the_flip(tmp_path: Path) -> None:
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = 255
    Image.fromarray(arr).save(tmp_path / "a.png")
    ds = ImageFolder(tmp_path, 8, flip=True)
    plain, flipped = ds[(0, False)]["image"], ds[(0, True)]["image"]
    assert torch.equal(flipped, plain.flip(-1))
    assert torch.equal(ImageFolder(tmp_path, 8, flip=False)[(0, True)]["image"], plain)
