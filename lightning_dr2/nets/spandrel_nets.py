"""GFP-GAN (v1.3/v1.4 "clean") and RestoreFormer from spandrel, with the registry's one forward.

spandrel (MIT, plain torch) carries ports of both architectures whose state-dict keys are the released
files' keys. We subclass its classes rather than wrapping them, so `state_dict()` keeps exactly those keys
(`nets.loading.load_into` then loads GFPGANv1.4.pth or RestoreFormer.pth strictly), and override forward:
(B, 3, S, S) RGB in [-1, 1] -> the restored image, as GFPGAN's `GFPGANer.enhance` calls the network
(`return_rgb=False`, first output). Imported only when such an entry is built (spandrel imports all of its
architectures at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from spandrel.architectures.GFPGAN import GFPGAN
from spandrel.architectures.RestoreFormer import RestoreFormer
from torch import Tensor

from lightning_dr2.nets.native_input import check_native_input


class GFPGANRestorer(GFPGAN):
    """GFPGANv1Clean as GFPGANer builds it for v1.3/v1.4 (arch='clean', channel_multiplier=2).

    The size/width arguments exist for tiny test configurations; the defaults are the released ones.
    GFPGANer passes `weight=0.5` to the network, which the clean architecture ignores, so there is no
    such option here. The StyleGAN2 decoder adds fresh N(0, 1) noise of shape (1, 1, h, w) per image in each
    of its style convs (`randomize_noise=True`, as GFPGANer leaves it): from the global generator when
    `seeds` is None (as the script draws it), else per image from its own seeded generator, so an image's
    result does not depend on the batch it is in.
    """

    def __init__(
        self, *, out_size: int = 512, num_style_feat: int = 512, channel_multiplier: int = 2, narrow: float = 1
    ) -> None:
        super().__init__(
            out_size=out_size,
            num_style_feat=num_style_feat,
            channel_multiplier=channel_multiplier,
            decoder_load_path=None,
            fix_decoder=False,
            num_mlp=8,
            input_is_latent=True,
            different_w=True,
            narrow=narrow,
            sft_half=True,
        )
        self.size = out_size

    def forward(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:  # type: ignore[override]
        check_native_input("GFPGAN", x, self.size)
        if seeds is None:
            return super().forward(x, return_rgb=False, randomize_noise=True)[0]
        noise = self.seeded_noise(seeds, x)
        # GFPGANv1Clean.forward does not pass `noise` on to its decoder; hand it over for this call only.
        hook = self.stylegan_decoder.register_forward_pre_hook(
            lambda _module, args, kwargs: (args, {**kwargs, "noise": noise}), with_kwargs=True
        )
        try:
            return super().forward(x, return_rgb=False, randomize_noise=True)[0]
        finally:
            hook.remove()

    def seeded_noise(self, seeds: Sequence[int], like: Tensor) -> list[Tensor]:
        """The decoder's noise maps, in the order its style convs draw them; image b's from seeds[b] alone.

        Drawn on the CPU in fp32 (device-independent values), as (1, 1, h, w) per layer and image: under
        `torch.manual_seed(s)` GFPGAN's own code draws the same values for a single image."""
        if len(seeds) != like.shape[0]:
            raise ValueError(f"GFPGAN: {len(seeds)} seeds for a batch of {like.shape[0]} images; give one per image")
        decoder = self.stylegan_decoder
        shapes = [getattr(decoder.noises, f"noise{i}").shape for i in range(decoder.num_layers)]
        per_image = []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed))
            per_image.append([torch.randn(shape, generator=gen) for shape in shapes])
        return [
            torch.cat([maps[i] for maps in per_image]).to(device=like.device, dtype=like.dtype)
            for i in range(len(shapes))
        ]


class RestoreFormerRestorer(RestoreFormer):
    """RestoreFormer as GFPGAN's inference script builds it (`--version RestoreFormer`: `RestoreFormer()`).

    Keyword arguments are RestoreFormer's constructor arguments (for tiny test configurations); the defaults
    are the released configuration (512 px, ch=64, ch_mult=(1, 2, 2, 4, 4, 8), 1024 codes of 256 dims).
    """

    def __init__(self, *, resolution: int = 512, **config: Any) -> None:
        super().__init__(resolution=resolution, **config)
        self.size = resolution

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        check_native_input("RestoreFormer", x, self.size)
        return super().forward(x)[0]
