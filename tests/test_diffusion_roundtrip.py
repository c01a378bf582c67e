"""A cosine-schedule, x0-predicting DDPM keeps its process in every stage: training, sample grid, the
evaluator callback, the export sidecar, `restore` and `eval`. Old flat sidecars stay readable."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DDPM_NET, build_tiny_testset
from PIL import Image

from lightning_dr2.config.pipeline import EvalConfig, RestoreConfig
from lightning_dr2.config.recipes import load_config
from lightning_dr2.datasets.synthetic import generate_faces, render_face
from lightning_dr2.diffusion import DiffusionConfig, GaussianDiffusion, beta_schedule
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.jobs.evaluate import run_eval
from lightning_dr2.jobs.restore import run_restore
from lightning_dr2.jobs.train_ddpm import train_ddpm

TRAINED = ["diffusion.schedule=cosine", "diffusion.predict=x0"]
PIPELINE = [
    "enhancer.name=none",
    "enhancer.size=64",
    "batch_size=2",
    "num_workers=0",
    "progress_bar=false",
    "accelerator=cpu",
]
DR2_SETTING = ["dr2.N=2", "dr2.tau=2", "dr2.omega=4"]  # restore's; eval lists its own in `settings`


class ProcessSpy:
    """Records every GaussianDiffusion built (anywhere) and which of our modules built it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built: list[tuple[GaussianDiffusion, set[str]]] = []
        original = GaussianDiffusion.__init__

        def spy(process: GaussianDiffusion, *args, **kwargs) -> None:
            original(process, *args, **kwargs)
            files = {Path(f.filename).name for f in traceback.extract_stack() if "lightning_dr2" in f.filename}
            self.built.append((process, files))

        monkeypatch.setattr(GaussianDiffusion, "__init__", spy)

    def take(self) -> tuple[list[GaussianDiffusion], set[str]]:
        built, self.built = self.built, []
        return [p for p, _ in built], set().union(*(files for _, files in built))


def assert_cosine_x0(processes: list[GaussianDiffusion]) -> None:
    """Each process is the 1000-step cosine process (at its kept steps) predicting x0."""
    assert processes
    cosine = np.cumprod(1 - beta_schedule("cosine", 1000))
    for process in processes:
        assert process.model_mean_type == "x0"
        np.testing.assert_allclose(process.alphas_cumprod, cosine[process.timestep_map], rtol=1e-10)


@pytest.fixture(scope="module")
def testset(tmp_path_factory) -> Path:
    return build_tiny_testset(tmp_path_factory.mktemp("eval"), n=2)


def train_cfg(tmp_path: Path, testset: Path):
    faces = tmp_path / "faces"
    generate_faces(faces, n=8, size=16, seed=3)
    return load_config(
        "ddpm_tiny",
        [
            *TINY_DDPM_NET,
            f"data.root={faces}",
            "data.synthetic=false",
            "data.batch_size=4",
            "data.val_max=2",
            "data.num_workers=0",
            f"runs_dir={tmp_path / 'runs'}",
            "run=cosine",
            "wandb.mode=disabled",
            "trainer.accelerator=cpu",
            "trainer.max_steps=2",
            "trainer.progress_bar=false",
            "trainer.val_check_interval=1000000",
            "trainer.limit_val_batches=0",
            "sampling.num_samples=2",
            "sampling.steps=3",
            "evaluator.enabled=true",
            "evaluator.every_n_steps=2",
            f"evaluator.sets=[{{name: tiny, root: {testset}, splits: [x4_mild], limit: 2}}]",
            "evaluator.settings=[{N: 2, tau: 2, omega: 4}]",
            "evaluator.metrics=[psnr]",
            "evaluator.random_metric_networks=true",
            "evaluator.batch_size=2",
            "evaluator.log_images=0",
            *TRAINED,
        ],
    )


def test_cosine_x0_process_in_every_stage(tmp_path: Path, testset: Path, monkeypatch) -> None:
    spy = ProcessSpy(monkeypatch)

    # Training: the module's loss, the sample grid and the evaluator's DR2 all use the trained process.
    result = train_ddpm(train_cfg(tmp_path, testset))
    processes, files = spy.take()
    assert {"ddpm.py", "samples.py", "evaluator.py"} <= files
    assert_cosine_x0(processes)
    assert result.module.diffusion_config == DiffusionConfig(
        steps=1000, schedule="cosine", predict="x0", learn_sigma=True, loss="hybrid"
    )

    # The export carries it.
    unet = result.export_path
    sidecar = json.loads(unet.with_suffix(".json").read_text())
    assert sidecar["diffusion"] == result.module.diffusion_config.to_dict()

    # restore with only the weights named: the sidecar's flags and process are used.
    faces = tmp_path / "in"
    faces.mkdir()
    Image.fromarray(render_face(5, 40)).save(faces / "a.png")
    restore = load_config(None, [f"unet_weights={unet}", *PIPELINE, *DR2_SETTING], RestoreConfig)
    restore.input, restore.output = str(faces), str(tmp_path / "out")
    assert run_restore(restore).restored == 1
    processes, files = spy.take()
    assert "restore.py" in files
    assert_cosine_x0(processes)

    # eval of the same file.
    evaluate = load_config(
        None,
        [
            f"unet_weights={unet}",
            *PIPELINE,
            f"sets=[{{name: tiny, root: {testset}, splits: [x4_mild], limit: 2}}]",
            "settings=[{N: 2, tau: 2, omega: 4}]",
            "metrics=[psnr]",
            f"runs_dir={tmp_path / 'eval'}",
            "run=r",
            "wandb.mode=disabled",
            "report_images=0",
        ],
        EvalConfig,
    )
    assert run_eval(evaluate).rows
    processes, files = spy.take()
    assert "evaluate.py" in files
    assert_cosine_x0(processes)

    # The pipeline object says what it runs.
    pipe = DR2E.from_weights(unet, enhancer="none", N=2, tau=2, omega=4, enhancer_size=64)
    assert pipe.dr2.diffusion_config == result.module.diffusion_config

    # A config that contradicts the sidecar is an error naming both; agreeing or default values are not.
    with pytest.raises(ValueError, match=r"diffusion.predict='v' \(recorded: 'x0'\).*unet_ema.json"):
        DR2E.from_config(
            load_config(None, [f"unet_weights={unet}", *PIPELINE, *DR2_SETTING, "diffusion.predict=v"], RestoreConfig)
        )
    agreeing = load_config(
        None, [f"unet_weights={unet}", *PIPELINE, *DR2_SETTING, "diffusion.schedule=cosine"], RestoreConfig
    )
    assert DR2E.from_config(agreeing).dr2.diffusion_config == result.module.diffusion_config

    # A flat flag file (written before exports carried the diffusion) means the published process.
    unet.with_suffix(".json").write_text(json.dumps(sidecar["net"]))
    flat = DR2E.from_weights(unet, enhancer="none", N=2, tau=2, omega=4, enhancer_size=64)
    assert flat.dr2.diffusion_config == DiffusionConfig(steps=1000, schedule="linear", predict="eps", learn_sigma=True)
    # ... which a config may not silently replace either.
    with pytest.raises(ValueError, match=r"diffusion.schedule='cosine' \(recorded: 'linear'\)"):
        DR2E.from_weights(unet, enhancer="none", N=2, tau=2, omega=4, diffusion=DiffusionConfig(schedule="cosine"))
