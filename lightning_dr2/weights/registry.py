"""The registry: every weight file the framework knows, its role, published hash and where to get it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WeightFile:
    """One weight file the framework knows about.

    `sha256` is the full hex digest or a prefix of it (torchvision, pytorch-fid and BasicSR file names
    embed the first 8+ hex digits); None when nobody published one. `urls` are direct, stable download
    links (tried in order); files without one name a page with manual instructions in `source`.
    `hub_cache` marks files that torch.hub caches under the same name, so the torch hub cache is searched.
    `aliases` are other names the same file is distributed under.
    """

    name: str
    role: str
    description: str
    sha256: str | None = None
    urls: tuple[str, ...] = ()
    source: str = ""
    used_by: str = ""
    hub_cache: bool = False
    aliases: tuple[str, ...] = field(default=())


_DR2_SOURCE = (
    "https://github.com/Kaldwin0106/DR2_Drgradation_Remover (README 'Download pre-trained models': "
    "Baidu Cloud Drive https://pan.baidu.com/s/1g8cz0hbd3wByfP9Q9bSHCQ?pwd=dr2e, manual download)"
)
_VQFR_METRICS_SOURCE = (
    "https://github.com/TencentARC/VQFR (README, metric weights: Google Drive folder "
    "https://drive.google.com/drive/folders/1k3RCSliF6PsujCMIdCD1hNM63EozlDIZ)"
)
_GFPGAN_SOURCE = (
    "https://github.com/TencentARC/GFPGAN (README model zoo; inference_gfpgan.py downloads it from the release)"
)

_REGISTRY: tuple[WeightFile, ...] = (
    # --- diffusion UNets (ADM, FFHQ 256x256, all with DR2_FFHQ256_FLAGS) ---
    WeightFile(
        name="DR2_FFHQ.pkl",
        role="diffusion UNet",
        description="DR2 release: ADM DDPM on FFHQ 256x256 (the DR2 stage's denoiser, 93.56 M params)",
        source=_DR2_SOURCE,
        used_by="lightning_dr2.nets.unet.UNet (DR2_FFHQ256_FLAGS): DR2 restoration",
    ),
    WeightFile(
        name="ffhq_10m.pt",
        role="diffusion UNet",
        description="ILVR: ADM DDPM on FFHQ 256x256, same network as DR2_FFHQ.pkl",
        source="https://github.com/jychoi118/ilvr_adm (README: pre-trained models, manual download)",
        used_by="lightning_dr2.nets.unet.UNet (DR2_FFHQ256_FLAGS): DR2 restoration",
    ),
    WeightFile(
        name="ffhq_p2.pt",
        role="diffusion UNet",
        description="P2-weighting: FFHQ 256x256 'lightweight ADM', same network as DR2_FFHQ.pkl",
        source="https://github.com/jychoi118/P2-weighting (README: pre-trained models, manual download)",
        used_by="lightning_dr2.nets.unet.UNet (DR2_FFHQ256_FLAGS): DR2 restoration",
    ),
    # --- enhancers ---
    WeightFile(
        name="SPARNetHD_FFHQ_DR2aug.pth",
        role="enhancer",
        description="DR2 release: SPARNetHD 512 trained on DR2-augmented FFHQ (y = DR2(x) * k_sigma)",
        source=_DR2_SOURCE,
        used_by="lightning_dr2.nets.sparnet.SPARNet.hd(): DR2E enhancement stage",
    ),
    WeightFile(
        name="SPARNetHD_V4_Attn2D_net_H-epoch10.pth",
        role="enhancer",
        description="Face-SPARNet: the original SPARNetHD 512 (trained on synthetic degradations)",
        source="https://github.com/chaofengc/Face-SPARNet (README: pretrained models, manual download)",
        used_by="lightning_dr2.nets.sparnet.SPARNet.hd(): enhancement stage / initialisation",
    ),
    # --- restoration networks (baselines; lightning_dr2.nets.restorers) ---
    WeightFile(
        name="GFPGANv1.3.pth",
        role="restoration network",
        description="GFP-GAN v1.3 (GFPGANv1Clean, 512 px, 285 keys): 'more natural' results",
        urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",),
        source=_GFPGAN_SOURCE,
        used_by="restoration network gfpgan_v1.3 (lightning_dr2.nets.spandrel_nets.GFPGANRestorer)",
    ),
    WeightFile(
        name="GFPGANv1.4.pth",
        role="restoration network",
        description="GFP-GAN v1.4 (GFPGANv1Clean, 512 px, 285 keys): more details than v1.3",
        urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",),
        source=_GFPGAN_SOURCE,
        used_by="restoration network gfpgan_v1.4 (lightning_dr2.nets.spandrel_nets.GFPGANRestorer)",
    ),
    WeightFile(
        name="RestoreFormer.pth",
        role="restoration network",
        description="RestoreFormer (CVPR 2022, 512 px, 405 keys), run by inference_gfpgan.py --version RestoreFormer",
        urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",),
        source=_GFPGAN_SOURCE + "; paper code https://github.com/wzhouxiff/RestoreFormer",
        used_by="restoration network restoreformer (lightning_dr2.nets.spandrel_nets.RestoreFormerRestorer)",
    ),
    WeightFile(
        name="codeformer.pth",
        role="restoration network",
        description="CodeFormer (NeurIPS 2022, 512 px, 515 keys). S-Lab License 1.0: non-commercial use only",
        urls=("https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",),
        source="https://github.com/sczhou/CodeFormer (inference_codeformer.py downloads it from the v0.1.0 release)",
        used_by="restoration network codeformer (lightning_dr2.nets.spandrel_codeformer.CodeFormerRestorer; "
        "pip install 'lightning_dr2[codeformer]')",
    ),
    WeightFile(
        name="VQFR_v1-33a1fac5.pth",
        role="restoration network",
        description="VQFR v1 (ECCV 2022) 512x512 face restorer, BasicSR layout ('params'), 76.56 M params",
        sha256="33a1fac5",  # BasicSR convention: the first 8 hex digits of the sha256 in the file name
        source=(
            "https://github.com/TencentARC/VQFR (README 'Quick Inference': Google Drive folder "
            "https://drive.google.com/drive/folders/1lczKYEbARwe27FJlKoFdng7UnffGDjO2, manual download)"
        ),
        used_by="lightning_dr2.nets.vqfr.VQFRv1: restorer 'vqfr_v1' (baseline, or enhancer after DR2)",
    ),
    WeightFile(
        name="VQFR_v2.pth",
        role="restoration network",
        description="VQFR v2 512x512 face restorer (fidelity_ratio control), BasicSR layout, 83.49 M params",
        urls=("https://github.com/TencentARC/VQFR/releases/download/v2.0.0/VQFR_v2.pth",),
        source="https://github.com/TencentARC/VQFR/releases (release v2.0.0)",
        used_by="lightning_dr2.nets.vqfr.VQFRv2: restorer 'vqfr_v2' (baseline, or enhancer after DR2)",
    ),
    WeightFile(
        name="GPEN-BFR-512.pth",
        role="restoration network",
        description=(
            "GPEN-BFR-512 (CVPR 2021) 512x512 face restorer, plain state dict, 71.01 M params. "
            "Academic and non-commercial use only"
        ),
        urls=("https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/GPEN-BFR-512.pth",),
        source="https://github.com/yangxy/GPEN (README 'Usage': the pre-trained model links)",
        used_by="lightning_dr2.nets.gpen.GPEN: restorer 'gpen_512' (baseline, or enhancer after DR2)",
    ),
    # --- metrics ---
    WeightFile(
        name="pt_inception-2015-12-05-6726825d.pth",
        role="FID network",
        description="pytorch-fid InceptionV3 (TF 2015-12-05 weights ported), pool3 2048-d features",
        sha256="6726825d",
        urls=(
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
        ),
        source="https://github.com/mseitzer/pytorch-fid",
        used_by="FID (lightning_dr2.metrics)",
        hub_cache=True,  # pytorch-fid fetches it with torch.hub into the same cache
    ),
    WeightFile(
        name="inception_FFHQ_512-f7b384ab.pth",
        role="FID statistics",
        description="BasicSR FFHQ-512 Inception statistics (dict mean/cov, 50k images), FID reference",
        sha256="f7b384ab",
        source=(
            "https://github.com/XPixelGroup/BasicSR/blob/master/docs/Metrics.md (section 'Pre-calculated "
            "FFHQ inception feature statistics': Google Drive / Baidu links, manual download); VQFR ships "
            f"it as inception_FFHQ_512.pth: {_VQFR_METRICS_SOURCE}; or compute your own with `fid-stats`"
        ),
        used_by="lightning_dr2.metrics.frechet.load_stats: FID against FFHQ",
        aliases=("inception_FFHQ_512.pth",),
    ),
    WeightFile(
        name="resnet18_110.pth",
        role="identity metric",
        description="arcface-pytorch resnet_face18 (use_se=False), identity distance 'Deg'",
        source=(
            f"{_VQFR_METRICS_SOURCE}; originally https://github.com/ronghuaiyang/arcface-pytorch "
            "(README: pretrained model, manual download)"
        ),
        used_by="lightning_dr2.nets.arcface.load_arcface: identity distance (Deg)",
    ),
    WeightFile(
        name="vgg16-397923af.pth",
        role="LPIPS backbone",
        description="torchvision VGG16 ImageNet weights (IMAGENET1K_V1), LPIPS 'vgg' (papers' protocol)",
        sha256="397923af",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        source=(
            'torchvision model zoo: python -c "import torchvision; '
            "torchvision.models.vgg16(weights='IMAGENET1K_V1')\" saves it in $TORCH_HOME/hub/checkpoints"
        ),
        used_by="lightning_dr2.metrics.lpips (net='vgg')",
        hub_cache=True,
    ),
    WeightFile(
        name="alexnet-owt-7be5be79.pth",
        role="LPIPS backbone",
        description="torchvision AlexNet ImageNet weights (IMAGENET1K_V1), LPIPS 'alex'",
        sha256="7be5be79",
        urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
        source=(
            'torchvision model zoo: python -c "import torchvision; '
            "torchvision.models.alexnet(weights='IMAGENET1K_V1')\" saves it in $TORCH_HOME/hub/checkpoints"
        ),
        used_by="lightning_dr2.metrics.lpips (net='alex')",
        hub_cache=True,
    ),
    # --- face detection (restore mode=photos) ---
    WeightFile(
        name="detection_Resnet50_Final.pth",
        role="face detector",
        description="RetinaFace ResNet-50 (biubug6/Pytorch_Retinaface, as released by facexlib): boxes + 5 landmarks",
        urls=("https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",),
        source="https://github.com/xinntao/facexlib (releases v0.1.0)",
        used_by="lightning_dr2.faces.retinaface (faces.detector=retinaface_resnet50)",
    ),
    WeightFile(
        name="detection_mobilenet0.25_Final.pth",
        role="face detector",
        description="RetinaFace MobileNet-0.25 (biubug6/Pytorch_Retinaface, as released by facexlib): small, fast",
        urls=("https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",),
        source="https://github.com/xinntao/facexlib (releases v0.1.0)",
        used_by="lightning_dr2.faces.retinaface (faces.detector=retinaface_mobilenet0.25)",
    ),
    # --- training ---
    WeightFile(
        name="vgg19-dcbb9e9d.pth",
        role="perceptual loss backbone",
        description="torchvision VGG19 ImageNet weights (IMAGENET1K_V1), the enhancer's perceptual loss",
        sha256="dcbb9e9d",
        urls=("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",),
        source=(
            'torchvision model zoo: python -c "import torchvision; '
            "torchvision.models.vgg19(weights='IMAGENET1K_V1')\" saves it in $TORCH_HOME/hub/checkpoints"
        ),
        used_by="lightning_dr2.losses.PerceptualLoss: enhancer training (train-enhancer)",
        hub_cache=True,
    ),
)

WEIGHTS: dict[str, WeightFile] = {w.name: w for w in _REGISTRY}
