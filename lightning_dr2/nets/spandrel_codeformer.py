"""CodeFormer from spandrel-extra-arches, with the registry's one forward.

A module of its own because spandrel-extra-arches is an optional extra (`lightning_dr2[codeformer]`):
CodeFormer's code and weights are under the S-Lab License 1.0 (non-commercial use only), so nothing else of
the project imports it. The subclass keeps spandrel's keys (those of the released codeformer.pth) and
calls the network as sczhou/CodeFormer's inference_codeformer.py does: `net(x, w=w, adain=True)[0]`.
"""

from __future__ import annotations

from spandrel_extra_arches.architectures.CodeFormer import CodeFormer
from torch import Tensor

from lightning_dr2.nets.native_input import check_native_input

# inference_codeformer.py builds CodeFormer(dim_embd=512, codebook_size=1024, n_head=8, n_layers=9,
# connect_list=['32', '64', '128', '256']); the rest of the architecture is fixed at 512 px.
_RELEASED = {
    "dim_embd": 512,
    "n_head": 8,
    "n_layers": 9,
    "codebook_size": 1024,
    "latent_size": 256,
    "connect_list": ["32", "64", "128", "256"],
}


class CodeFormerRestorer(CodeFormer):
    """CodeFormer at 512 px with the fidelity weight `w` (0: the codebook's face, 1: closest to the input).

    AdaIN of the codebook features is always on, as in inference_codeformer.py (spandrel's forward fixes it).
    """

    def __init__(self, *, w: float = 0.5) -> None:
        if not 0.0 <= float(w) <= 1.0:
            raise ValueError(f"CodeFormer fidelity weight w must be in [0, 1]; got {w}")
        super().__init__(**_RELEASED)
        self.w = float(w)
        self.size = 512

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        check_native_input("CodeFormer", x, self.size)
        return super().forward(x, weight=self.w)[0]
