"""PSNR/SSIM against an independent numpy/cv2 transcription of BasicSR's formulas (per image, HWC)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from lightning_dr2.image_io import to_uint8
from lightning_dr2.metrics.psnr_ssim import PSNR, SSIM, psnr_per_image, ssim_per_image

# ----------------------------------------------------------------------------------------------------
# Reference: BasicSR's calculate_psnr / calculate_ssim / to_y_channel, one HxWxC uint8 image at a time.
# Images here are RGB, so the Y weights are in RGB order (BasicSR reads BGR and uses bgr2ycbcr).


def ref_to_y(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32) / 255.0
    y = np.dot(img, [65.481, 128.553, 24.966]) + 16.0
    y = (y / 255.0).astype(np.float32)
    return y[..., None] * 255.0


def ref_prepare(img, img2, crop_border, y):
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]
    if y:
        img, img2 = ref_to_y(img), ref_to_y(img2)
    return img.astype(np.float64), img2.astype(np.float64)


def ref_psnr(img, img2, crop_border=0, y=False) -> float:
    img, img2 = ref_prepare(img, img2, crop_border, y)
    mse = np.mean((img - img2) ** 2)
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(255.0 * 255.0 / mse)


def ref_ssim_channel(img, img2) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(img2, -1, window)[5:-5, 5:-5]
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = cv2.filter2D(img**2, -1, window)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = cv2.filter2D(img2**2, -1, window)[5:-5, 5:-5] - mu2_sq
    sigma12 = cv2.filter2D(img * img2, -1, window)[5:-5, 5:-5] - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return ssim_map.mean()


def ref_ssim(img, img2, crop_border=0, y=False) -> float:
    img, img2 = ref_prepare(img, img2, crop_border, y)
    return float(np.mean([ref_ssim_channel(img[..., i], img2[..., i]) for i in range(img.shape[2])]))


def ref_tensor2img(x: torch.Tensor) -> np.ndarray:
    """BasicSR tensor2img for one CHW tensor in [-1, 1] -> HWC uint8 (RGB kept)."""
    x = x.float().detach().cpu().clamp_(-1, 1)
    x = (x + 1) / 2
    return (x.numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)


# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Targets in [-1, 1] with structure, predictions = noisy, slightly out-of-range versions."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 40), torch.linspace(-1, 1, 48), indexing="ij")
    base = torch.stack([xx, yy, torch.sin(4 * xx) * torch.cos(3 * yy)])
    target = base.unsqueeze(0) * torch.rand(5, 3, 1, 1, generator=g) + 0.2 * torch.randn(
        5, 3, 40, 48, generator=g
    )
    target = target.clamp(-1, 1)
    preds = target + torch.linspace(0.02, 0.3, 5).view(5, 1, 1, 1) * torch.randn(5, 3, 40, 48, generator=g)
    return preds, target  # preds exceed [-1, 1] in places: exercises the clamp


def per_image_refs(preds, target, fn, **kw) -> np.ndarray:
    return np.array(
        [fn(ref_tensor2img(p), ref_tensor2img(t), **kw) for p, t in zip(preds, target, strict=True)]
    )


def test_to_uint8_matches_tensor2img(pair):
    preds, _ = pair
    u8 = to_uint8(preds)
    assert u8.dtype == torch.uint8
    for i in range(len(preds)):
        np.testing.assert_array_equal(u8[i].permute(1, 2, 0).numpy(), ref_tensor2img(preds[i]))
    # half-way values round to even, like numpy: 0.5/255 steps
    x = torch.tensor([-1.0, 1.0, 0.0, 2.0, -3.0])
    assert to_uint8(x).tolist() == [0, 255, 128, 255, 0]  # 127.5 -> 128 (even)
    assert to_uint8(torch.tensor([0.5 / 255 * 2]), value_range=(0, 2)).tolist() == [0]
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.tensor([float("nan")]))


def _ours_and_reference(pair, ours_fn, ref_fn, crop_border, y):
    preds, target = pair
    ours = ours_fn(to_uint8(preds), to_uint8(target), crop_border=crop_border, y_channel=y)
    assert ours.dtype == torch.float64 and ours.shape == (5,)
    return ours, per_image_refs(preds, target, ref_fn, crop_border=crop_border, y=y)


@pytest.mark.parametrize("crop_border, y", [(0, False), (0, True), (4, False), (3, True)])
def test_psnr_matches_basicsr(pair, crop_border, y):
    ours, ref = _ours_and_reference(pair, psnr_per_image, ref_psnr, crop_border, y)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=0)


@pytest.mark.parametrize("crop_border, y", [(0, False), (0, True), (4, False), (3, True)])
def test_ssim_matches_basicsr(pair, crop_border, y):
    ours, ref = _ours_and_reference(pair, ssim_per_image, ref_ssim, crop_border, y)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-10)
    assert (ours < 1).all() and (ours[:-1] > ours[1:]).all()  # more noise, lower SSIM


def test_metrics_are_mean_of_per_image_values(pair):
    preds, target = pair
    psnr, ssim = PSNR(), SSIM()
    psnr.update(preds[:2], target[:2])  # batch size must not matter
    psnr.update(preds[2:], target[2:])
    ssim.update(preds[:3], target[:3])
    ssim.update(preds[3:], target[3:])
    assert psnr.compute().dtype == torch.float64
    assert psnr.compute().item() == pytest.approx(per_image_refs(preds, target, ref_psnr).mean(), rel=1e-12)
    assert ssim.compute().item() == pytest.approx(per_image_refs(preds, target, ref_ssim).mean(), abs=1e-10)
    assert psnr.count.item() == 5 and ssim.count.item() == 5


def test_merge_states_like_ddp(pair):
    """Sum/count states merge across processes (dist_reduce_fx='sum'): two halves == the whole."""
    preds, target = pair
    whole, a, b = SSIM(), SSIM(), SSIM()
    whole.update(preds, target)
    a.update(preds[:2], target[:2])
    b.update(preds[2:], target[2:])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(whole.compute().item(), abs=1e-14)


def test_identical_images_psnr():
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert torch.isinf(psnr_per_image(to_uint8(x), to_uint8(x))).all()  # BasicSR returns inf
    assert ref_psnr(ref_tensor2img(x[0]), ref_tensor2img(x[0])) == math.inf
    capped = PSNR()
    capped.update(x, x)
    assert capped.compute().item() == 100.0 and capped.identical.item() == 3
    uncapped = PSNR(max_psnr=None)
    uncapped.update(x, x)
    assert math.isinf(uncapped.compute().item())
    # a genuine value below the cap is untouched
    y = x.clone()
    y[0, 0, 0, 0] = 1.0 if x[0, 0, 0, 0] < 0 else -1.0
    capped.reset()
    capped.update(y[:1], x[:1])
    assert capped.compute().item() < 100.0 and capped.identical.item() == 0
    ssim = SSIM()
    ssim.update(x, x)
    assert ssim.compute().item() == pytest.approx(1.0, abs=1e-12)


def test_bad_inputs():
    u8 = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        psnr_per_image(u8.float(), u8.float())
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_per_image(u8, u8[:, :, :8])
    with pytest.raises(ValueError, match="11x11"):
        ssim_per_image(u8[..., :10, :10], u8[..., :10, :10])
    with pytest.raises(ValueError, match="3 channels|3-channel"):
        psnr_per_image(u8[:, :1], u8[:, :1], y_channel=True)
    with pytest.raises(ValueError, match="shapes differ"):
        PSNR().update(torch.zeros(1, 3, 16, 16), torch.zeros(2, 3, 16, 16))


def ref_vqfr_correct(restored_u8: np.ndarray, gt_u8: np.ndarray) -> np.ndarray:
    """VQFR metric_paper/calculate_psnr_ssim.py's --correct_mean_var, transcribed: HWC float32 on [0, 1],
    per channel mean then std to the GT's, twice; returned on 0-255 (what it passes to calculate_psnr)."""
    restored, gt = restored_u8.astype(np.float32) / 255.0, gt_u8.astype(np.float32) / 255.0
    for j in range(3):
        mean_gt, std_gt = np.mean(gt[:, :, j]), np.std(gt[:, :, j])
        for _ in range(2):
            restored[:, :, j] = restored[:, :, j] - np.mean(restored[:, :, j]) + mean_gt
            restored[:, :, j] = restored[:, :, j] / np.std(restored[:, :, j]) * std_gt
    return restored * 255.0


def test_vqfr_protocol_matches_its_script_and_differs_from_basicsr(pair):
    preds, target = pair
    # a colour cast on the outputs: the VQFR correction removes it, BasicSR's protocol charges it
    shifted = (preds * torch.tensor([0.8, 1.0, 1.1]).view(1, 3, 1, 1) + 0.1).clamp(-1, 1)
    ours_psnr, ours_ssim = PSNR(protocol="vqfr"), SSIM(protocol="vqfr")
    ours_psnr.update(shifted, target)
    ours_ssim.update(shifted, target)
    refs_psnr, refs_ssim = [], []
    for p, t in zip(shifted, target, strict=True):
        corrected, gt = ref_vqfr_correct(ref_tensor2img(p), ref_tensor2img(t)), ref_tensor2img(t).astype(np.float64)
        refs_psnr.append(ref_psnr(corrected.astype(np.float64), gt))
        refs_ssim.append(ref_ssim(corrected.astype(np.float64), gt))
    # float32 means/stds summed in another order than numpy's: equal to ~1e-5 dB
    np.testing.assert_allclose(ours_psnr.last_values.numpy(), refs_psnr, rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours_ssim.last_values.numpy(), refs_ssim, rtol=0, atol=1e-6)
    basicsr = PSNR()
    basicsr.update(shifted, target)
    assert float(ours_psnr.compute()) > float(basicsr.compute()) + 1.0  # the cast no longer counts
    with pytest.raises(ValueError, match="protocol"):
        PSNR(protocol="matlab")
