"""Background upsamplers by name (`faces.background`): what fills the photo behind the pasted faces when the
output is upscaled (`faces.upscale` > 1)."""

from __future__ import annotations

from lightning_dr2.faces.paste import BackgroundUpsampler, bicubic_upsampler

BACKGROUNDS = ("bicubic",)


def background_upsampler(name: str) -> BackgroundUpsampler:
    """The upsampler called `name` (one of BACKGROUNDS)."""
    if name == "bicubic":
        return bicubic_upsampler
    raise ValueError(f"unknown background upsampler {name!r}; choose one of {list(BACKGROUNDS)}")
