"""CUDA paths: bf16 autocast, channels_last and torch.compile agree with fp32 eager. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.exports.restorer import load_restorer
from lightning_dr2.jobs.bench import psnr_db
from lightning_dr2.nets.unet import DR2_FFHQ256_FLAGS, UNet

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    return UNet.from_flags(DR2_FFHQ256_FLAGS).eval().cuda(), load_restorer("sparnethd", "random").module.cuda()


@pytest.mark.parametrize("compile", [False, True])
def test_bf16_pipeline_matches_fp32(networks, compile: bool) -> None:
    unet, enhancer = networks
    lq = torch.rand(4, 3, 256, 256, device="cuda") * 2 - 1
    ref = DR2E(unet, enhancer, N=8, tau=35).restore_tensors(lq, seeds=[0, 1, 2, 3])["output"]
    fast = DR2E(unet, enhancer, N=8, tau=35, dtype=torch.bfloat16).optimize(compile=compile, channels_last=True)
    out = fast.restore_tensors(lq, seeds=[0, 1, 2, 3])["output"]
    unet.to(memory_format=torch.contiguous_format)
    assert psnr_db(out, ref) >= 35.0


def test_unet_bf16_autocast_keeps_embedding_fp32(networks) -> None:
    unet, _ = networks
    x = torch.randn(2, 3, 256, 256, device="cuda")
    t = torch.tensor([10, 900], device="cuda")
    with torch.no_grad():
        ref = unet(x, t)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = unet(x, t)
    assert out.dtype == torch.float32
    assert (out - ref).norm() / ref.norm() < 2e-2
