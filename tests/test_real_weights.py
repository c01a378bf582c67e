"""Published weight files, when present under data/weights or $DR2_WEIGHTS: they load strictly into our
networks. Skipped (with the file named) where they are absent, as on CI."""

from __future__ import annotations

import pytest
import torch

from lightning_dr2.weights import MissingWeightsError, find_weight

pytestmark = pytest.mark.weights


def weight(name: str):
    try:
        return find_weight(name)
    except MissingWeightsError:
        pytest.skip(f"{name} not present (see `python -m lightning_dr2 weights`)")


@pytest.mark.parametrize("name", ["DR2_FFHQ.pkl", "ffhq_10m.pt", "ffhq_p2.pt"])
def test_published_unets_load_strictly(name: str) -> None:
    from lightning_dr2.diffusion import PUBLISHED_DIFFUSION
    from lightning_dr2.exports.unet import load_unet

    loaded = load_unet(weight(name))
    net, diffusion = loaded.module, loaded.diffusion
    assert sum(p.numel() for p in net.parameters()) == 93_563_910
    assert diffusion == PUBLISHED_DIFFUSION  # no sidecar: linear/1000/eps, learned sigma


@pytest.mark.parametrize("name", ["SPARNetHD_FFHQ_DR2aug.pth", "SPARNetHD_V4_Attn2D_net_H-epoch10.pth"])
def test_published_sparnethd_loads_strictly(name: str) -> None:
    from lightning_dr2.nets.sparnet import load_sparnet

    net = load_sparnet(weight(name))
    out = net(torch.zeros(1, 3, 512, 512))
    assert out.shape == (1, 3, 512, 512)


def test_arcface_and_inception_load() -> None:
    from lightning_dr2.nets.arcface import load_arcface
    from lightning_dr2.nets.inception import load_fid_inception

    assert load_arcface(weight("resnet18_110.pth"))(torch.zeros(1, 1, 128, 128)).shape == (1, 512)
    assert load_fid_inception(weight("pt_inception-2015-12-05-6726825d.pth"))(torch.zeros(1, 3, 64, 64)).shape == (
        1,
        2048,
    )
