"""DR2: the low-pass filter Phi_N and the degradation remover (plain math around a UNet)."""

from lightning_dr2.dr2.lowpass import lowpass
from lightning_dr2.dr2.remover import DR2, DR2Output, default_omega

__all__ = ["DR2", "DR2Output", "default_omega", "lowpass"]
