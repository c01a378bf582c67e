"""LPIPSMetric: offline construction, backbone loading, sum/count semantics. Never downloads."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.hub

import lightning_dr2.weights.lookup as weights_lookup
from lightning_dr2.metrics.lpips import BACKBONE_FILES, LPIPSMetric, find_backbone


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """Fail loudly on any model-zoo download; isolate every lookup place from the developer's machine."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("DR2_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(weights_lookup, "PROJECT_ROOT", tmp_path / "repo")


def refuse(url, *args, **kwargs):
    raise AssertionError(f"test tried to download {url}")


@pytest.fixture(scope="module")
def random_alex() -> LPIPSMetric:
    """Random backbone, lin heads from the pip package: builds offline (pnet_rand -> weights=None)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.hub, "download_url_to_file", refuse)
        torch.manual_seed(0)
        return LPIPSMetric(net="alex", pretrained_backbone=False)


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_identical_images_score_zero(random_alex):
    random_alex.reset()
    x = images(3, 0)
    random_alex.update(x, x)
    assert random_alex.compute().item() == 0.0
    assert random_alex.compute().dtype == torch.float64


def test_two_batches_equal_one(random_alex):
    a, b = images(4, 1), images(4, 2)
    random_alex.reset()
    random_alex.update(a, b)
    whole = random_alex.compute().item()
    random_alex.reset()
    random_alex.update(a[:1], b[:1])
    random_alex.update(a[1:], b[1:])
    assert random_alex.count.item() == 4
    assert random_alex.compute().item() == pytest.approx(whole, rel=1e-6)
    assert whole > 0


def test_stays_in_eval_mode(random_alex):
    random_alex.train()
    assert not random_alex.net.training and all(not m.training for m in random_alex.net.modules())
    assert not any(p.requires_grad for p in random_alex.net.parameters())


def test_missing_backbone_names_file_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        LPIPSMetric(net="vgg")
    message = str(info.value)
    assert "vgg16-397923af.pth" in message and "IMAGENET1K_V1" in message and "data/weights" in message
    with pytest.raises(FileNotFoundError, match="alexnet-owt-7be5be79.pth"):
        find_backbone("alex", weights_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="squeeze"):
        LPIPSMetric(net="squeeze")


def test_backbone_load_matches_lpips_own_loading(tmp_path):
    """Our offline load == what `lpips.LPIPS(pretrained=True)` computes when torchvision finds the same
    file in its hub cache (a random stand-in for the ImageNet weights; the hub cache never downloads when
    the file is present, and `no_downloads` would fail the test if it tried). Proves the key mapping."""
    import lpips
    import torchvision

    torch.manual_seed(1)
    tv_state = torchvision.models.alexnet(weights=None).state_dict()
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(tv_state, hub / BACKBONE_FILES["alex"])

    assert find_backbone("alex") == hub / BACKBONE_FILES["alex"]
    ours = LPIPSMetric(net="alex")
    with warnings.catch_warnings():  # torchvision's deprecation notes about lpips' `pretrained=True`
        warnings.simplefilter("ignore", UserWarning)
        reference = lpips.LPIPS(net="alex", pretrained=True, verbose=False)  # lpips' own path, torchvision
    a, b = images(2, 3), images(2, 4)
    ours.update(a, b)
    expected = reference(to_pixels(a), to_pixels(b)).flatten().double().mean()
    assert ours.compute().item() == pytest.approx(expected.item(), rel=1e-6)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """The BasicSR input: uint8 PNG values, /255, normalised to [-1, 1]."""
    u8 = ((x.clamp(-1, 1) + 1) / 2 * 255).round()
    return (u8 / 255.0 - 0.5) / 0.5


def test_search_order(tmp_path, monkeypatch):
    """weights_dir, then $DR2_WEIGHTS, then data/weights, then the torch hub cache."""
    name = BACKBONE_FILES["vgg"]
    places = {key: tmp_path / key for key in ("arg", "env", "data/weights", "torch_home/hub/checkpoints")}
    for folder in places.values():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
    monkeypatch.setenv("DR2_WEIGHTS", str(places["env"]))
    assert find_backbone("vgg", weights_dir=places["arg"]) == places["arg"] / name
    assert find_backbone("vgg").resolve() == (places["env"] / name).resolve()
    monkeypatch.delenv("DR2_WEIGHTS")
    assert find_backbone("vgg").resolve() == (places["data/weights"] / name).resolve()
    (places["data/weights"] / name).unlink()
    assert find_backbone("vgg") == places["torch_home/hub/checkpoints"] / name


def test_bad_shapes(random_alex):
    with pytest.raises(ValueError, match="shapes differ"):
        random_alex.update(images(1, 0), images(2, 0))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        random_alex.update(images(1, 0)[:, :1], images(1, 0)[:, :1])
