"""The one home of network files: locate, identify, read, write and load exported and released weights.

- `locate`: a weights setting -> a file (`locate_weights`), and which file it is (`weights_identity`: sha256).
- `sidecar`: the shared export format: a plain state dict + a JSON sidecar saying how to rebuild the network.
- `unet`: the DR2 UNet (`load_unet` -> `LoadedUNet`, `write_unet`, the sidecar's flags and process).
- `restorer`: registered restoration networks and enhancer exports (`load_restorer` -> `LoadedRestorer`,
  `write_enhancer`).

Loading returns what was loaded (module, file, sha256, the sidecar as read, and what the pipeline needs), so
manifests record what ran instead of re-deriving it from the settings. `dr2.pipeline.DR2E` takes the modules.
"""

from lightning_dr2.exports.locate import RANDOM, locate_weights, weights_identity
from lightning_dr2.exports.restorer import LoadedRestorer, load_restorer, write_enhancer
from lightning_dr2.exports.unet import DEFAULT_UNET_FILE, LoadedUNet, load_unet, unet_identity, write_unet

__all__ = [
    "DEFAULT_UNET_FILE",
    "RANDOM",
    "LoadedRestorer",
    "LoadedUNet",
    "load_restorer",
    "load_unet",
    "locate_weights",
    "unet_identity",
    "weights_identity",
    "write_enhancer",
    "write_unet",
]
