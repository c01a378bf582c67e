"""The local web demo (`make demo`, `python -m lightning_dr2 demo`): a Gradio page on 127.0.0.1.

Upload a photo (faces are detected, aligned, restored and pasted back) or an aligned face, pick a method
and (N, tau), and see the input with its faces marked | DR2's output | the restored image, with the restored
PNG to download. The page binds the loopback address only, never opens a share link, and sends nothing
anywhere: analytics are off (set here, before gradio is imported) and the default theme needs no CDN
(tests/test_demo_browser.py records every request the browser makes).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from lightning_dr2.demo.handler import DEFAULT_SETTING, DemoSession
from lightning_dr2.demo.models import DemoModels, resolve_models
from lightning_dr2.image_io import write_png

HOST = "127.0.0.1"  # loopback only: the demo is for the person at this machine
DEFAULT_PORT = 7860
MAX_UPLOAD = "50mb"
# Off before gradio (and huggingface_hub, which it imports) read them: no usage reports, no version checks.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "1"}


def import_gradio() -> Any:
    """gradio with analytics off, or an error saying how to install the optional `demo` extra."""
    os.environ.update(OFFLINE_ENV)
    try:
        import gradio
    except ImportError as err:
        raise ImportError(
            f"the web demo needs gradio, which is not installed ({err}): pip install 'lightning_dr2[demo]' "
            "(or `make demo`, which installs it)"
        ) from err
    return gradio


def header(models: DemoModels, device: torch.device) -> str:
    """The page's introduction: what it does, which models it uses (or what is missing), on which device."""
    where = "the CPU (tiny models: seconds per face; the released UNet runs 21-31 times per face: slow)"
    if device.type == "cuda":
        where = f"the GPU ({torch.cuda.get_device_name(device)})"
    return (
        "# DR2 face restoration (lightning_dr2)\n"
        "Upload a photo (faces are detected, aligned to the FFHQ template, restored and pasted back) or an "
        "aligned face crop. DR2 (Diffusion-based Robust Degradation Remover, CVPR 2023) diffuses the input to "
        "step omega and denoises it down to tau, keeping the low frequencies (Phi_N) of the input; an enhancer "
        "then restores detail. Larger N or tau: more degradation removed, less fidelity.\n\n"
        f"**Models:** {models.notice}\n\n**Runs on** {where}. Nothing leaves this machine."
    )


def build_app(session: DemoSession, out_dir: str | os.PathLike) -> Any:
    """The Gradio Blocks of the page, calling `session.restore` (one request at a time)."""
    gr = import_gradio()
    out_dir = Path(out_dir)
    labels = [m.label for m in session.models.methods]
    with gr.Blocks(title="lightning_dr2 demo", analytics_enabled=False) as app:
        gr.Markdown(header(session.models, session.device))
        with gr.Row():
            upload = gr.Image(
                label="Photo or aligned face", type="filepath", image_mode=None, sources=["upload"], elem_id="upload"
            )
            with gr.Column():
                method = gr.Dropdown(
                    labels, value=labels[0] if labels else None, label="Method", elem_id="method", interactive=True
                )
                aligned = gr.Checkbox(label="aligned face (skip detection; restore the whole upload)", value=False)
                n = gr.Slider(1, 32, value=DEFAULT_SETTING.N, step=1, label="N (Phi_N downsampling: 4, 8, 16)")
                tau = gr.Slider(0, 98, value=DEFAULT_SETTING.tau, step=1, label="tau (stop step, 0..98)")
                button = gr.Button("Restore", variant="primary", elem_id="restore", interactive=bool(labels))
        status = gr.Markdown(
            "Upload an image and press Restore." if labels else f"**{session.models.notice}**", elem_id="status"
        )
        with gr.Row():
            marked = gr.Image(label="Input, faces marked", format="png", interactive=False, elem_id="marked")
            dr2 = gr.Image(label="DR2 output", format="png", interactive=False, elem_id="dr2")
            restored = gr.Image(label="Restored", format="png", interactive=False, elem_id="restored")
        download = gr.File(label="Restored image (PNG)", interactive=False, elem_id="download")

        def run(path: str | None, label: str | None, is_aligned: bool, n_value: float, tau_value: float):
            result = session.restore(path, label, n_value, tau_value, is_aligned)
            file = None
            if result.restored is not None:
                stem = Path(path).stem if path else "upload"
                file = str(write_png(out_dir / f"{stem}_restored.png", result.restored))
            return result.annotated, result.dr2, result.restored, file, result.status

        button.click(run, [upload, method, aligned, n, tau], [marked, dr2, restored, download, status])
    return app


def pick_device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def launch(
    port: int = DEFAULT_PORT,
    weights_dir: str | None = None,
    device: str | None = None,
    block: bool = True,
    models: DemoModels | None = None,
) -> tuple[Any, str]:
    """Start the page on http://127.0.0.1:<port>; returns (the Blocks, its URL). `block=False` returns at once
    (tests; stop it with `.close()`)."""
    import_gradio()
    session = DemoSession(models or resolve_models(weights_dir), pick_device(device))
    app = build_app(session, tempfile.mkdtemp(prefix="lightning_dr2_demo_"))
    app.queue(default_concurrency_limit=1)
    _, url, _ = app.launch(
        server_name=HOST,
        server_port=port,
        share=False,
        prevent_thread_lock=not block,
        show_error=True,
        max_file_size=MAX_UPLOAD,
        ssr_mode=False,
        mcp_server=False,
        quiet=not block,
        footer_links=[],
    )
    return app, url
