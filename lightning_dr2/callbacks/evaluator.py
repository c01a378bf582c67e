"""Benchmark metrics of the model being trained, during training and at validate/test.

`BenchmarkEvaluator` holds what every such evaluation shares: the eval splits, the frozen metric networks
(kept here, not in the LightningModule, so they are never EMA-copied or checkpointed), the schedule, the
sharded scoring loop (each image scored exactly once across ranks, without padding, with a seed derived
from its name, so the numbers are the same on 1 or N GPUs), and the logging. Images are scored by the
shared `metrics.scoring.Scorer`, the one `eval` scores its saved outputs with. A subclass says only how a
batch of a split is restored by the network being trained (`restorer`):

- `DR2Evaluator` (DDPM training): the DR2 pipeline built from the EMA UNet (or the live one).
- `EnhancerEvaluator` (enhancer training): DR2 of the frozen UNet, computed once per image and kept,
  then the EMA generator (or the live one), exactly as `DR2E` runs at inference.

Logged every `every_n_steps` iterations and at the end of `validate`/`test`: eval/<set>/<split>/<metric>
(with /<setting> when several (N, tau) are evaluated), a W&B table of per-image metrics with thumbnails,
an input | output | GT grid per split, and `results_step<global step>.json` in `out_dir`.
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_dr2.datasets.datamodule import ShardSampler
from lightning_dr2.datasets.eval_splits import eval_splits, split_files
from lightning_dr2.diffusion import DiffusionConfig
from lightning_dr2.diffusion.noise import image_seed
from lightning_dr2.dr2.pipeline import DR2E
from lightning_dr2.image_io import resize
from lightning_dr2.metrics.catalogue import default_metrics, metric_key, split_key
from lightning_dr2.metrics.scoring import Scorer, group_by_size
from lightning_dr2.metrics.suite import MetricSuite
from lightning_dr2.modules.averaged import ema_or_live
from lightning_dr2.report import save_grid, setting_name

log = logging.getLogger(__name__)


def build_eval_splits(sets: Sequence[dict[str, Any]]) -> list[tuple[str, str, Dataset, bool, str | None]]:
    """(set, split, dataset, paired, fid_reference) for every configured split: the images `eval` scores
    (`split_files`: those the set's manifest lists, the first `limit`; a missing file is a warning), less any
    the dataset found undecodable."""
    from lightning_dr2.datasets.testsets import PairedSplit, RealLQSet

    out = []
    for spec in sets:
        for part in eval_splits(spec):
            if part.paired:
                dataset: Dataset = PairedSplit(part.root, part.name)
                names = [rel for rel, _, _ in dataset.pairs]
            else:
                dataset = RealLQSet(part.lq_dir)
                names = [rel for rel, _ in dataset.files]
            index = {name: i for i, name in enumerate(names)}
            scored = [index[rel] for rel in split_files(part, allow_missing=True).rels if rel in index]
            if not scored:
                raise ValueError(
                    f"eval set '{part.set}', split '{part.name}': none of the images its manifest lists in "
                    f"{part.lq_dir} can be read (see the warnings above); rebuild the set or drop the split"
                )
            out.append((part.set, part.name, Subset(dataset, scored), part.paired, part.fid_reference))
    return out


Restore = Callable[[Tensor, Sequence[str]], Tensor]  # (lq batch, image names) -> restored batch


def evaluator_options(ev: DictConfig, seed: int, out_dir: Path) -> dict[str, Any]:
    """The `BenchmarkEvaluator` arguments of an `evaluator` config section (config.EvaluatorConfig, checked by
    config.run.check_evaluator when the config was loaded)."""
    container: dict[str, Any] = OmegaConf.to_container(ev, resolve=True)  # type: ignore[assignment]
    return dict(
        sets=container["sets"],
        settings=container["settings"],
        every_n_steps=ev.every_n_steps,
        metrics=container["metrics"],
        batch_size=ev.batch_size,
        respacing=ev.respacing,
        skip_missing_weights=ev.skip_missing_weights,
        random_metric_networks=ev.random_metric_networks,
        seed=seed,
        log_images=ev.log_images,
        out_dir=out_dir,
    )


class BenchmarkEvaluator(pl.Callback, ABC):
    """Scores the trained network on the eval splits; subclasses implement `restorer`.

    `steps_per_iteration`: optimizer steps (`trainer.global_step`) per training iteration; `every_n_steps`
    counts iterations (the enhancer's manual D + G optimisation takes 2 steps per iteration).
    """

    network_attr = "net"  # the LightningModule attribute whose EMA copy (or itself) is evaluated

    def __init__(
        self,
        sets: Sequence[dict[str, Any]],
        settings: Sequence[dict[str, Any]] = ({"N": 8, "tau": 35},),
        every_n_steps: int = 5000,
        metrics: Sequence[str] | None = None,
        batch_size: int = 8,
        respacing: int = 100,
        skip_missing_weights: bool = True,
        random_metric_networks: bool = False,
        seed: int = 0,
        log_images: int = 8,
        out_dir: str | Path | None = None,
        steps_per_iteration: int = 1,
    ) -> None:
        self.sets = [dict(s) for s in sets]
        self.settings = [dict(s) for s in settings]
        self.every_n_steps = every_n_steps
        self.metric_names = default_metrics() if metrics is None else list(metrics)
        self.batch_size = batch_size
        self.respacing = respacing
        self.skip_missing_weights = skip_missing_weights
        self.random_metric_networks = random_metric_networks
        self.seed = seed
        self.log_images = log_images
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.steps_per_iteration = steps_per_iteration
        self.splits: list[tuple[str, str, Dataset, bool, str | None]] | None = None
        self.scorers: dict[tuple[bool, str | None], Scorer] = {}
        self.last_results: dict[str, float] = {}
        self._done_step = -1

    @abstractmethod
    def restorer(self, network: nn.Module, setting: dict[str, Any], key: str, target_size: int) -> Restore:
        """How split `key` is restored under `setting` by `network` (the EMA or live one, in eval mode)."""

    def seeds(self, names: Sequence[str]) -> list[int]:
        """Per-image seeds as `restore`/`eval` draw them (by name), so the numbers match theirs."""
        return [image_seed(self.seed, name) for name in names]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.splits is None:
            self.splits = build_eval_splits(self.sets)

    def _scorer(self, paired: bool, fid_reference: str | None, device: torch.device) -> Scorer:
        key = (paired, fid_reference)
        if key not in self.scorers:
            suite = MetricSuite(
                self.metric_names,
                paired=paired,
                fid_reference=fid_reference,
                skip_missing=self.skip_missing_weights,
                random_networks=self.random_metric_networks,
            )
            for metric, note in suite.notes.items():
                log.info("evaluator: %s %s", metric, note)
            # the network may work at another size than the set's: resizing to the ground truth is routine here
            self.scorers[key] = Scorer(suite, warn_on_resize=False)
        self.scorers[key].suite.to(device)
        return self.scorers[key]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        every = self.every_n_steps * self.steps_per_iteration
        if every > 0 and step > 0 and step % every == 0 and step != self._done_step:
            self._done_step = step
            self.evaluate(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.evaluate(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module)

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        assert self.splits is not None, "setup() builds the eval splits"
        network = ema_or_live(trainer, pl_module, self.network_attr)
        was_training = network.training
        network.eval()
        device = pl_module.device
        shard = (trainer.world_size, trainer.global_rank)
        results: dict[str, float] = {}
        several = len(self.settings) > 1
        for setting in self.settings:
            for set_name, split, dataset, paired, fid_reference in self.splits:
                name = setting_name(setting["N"], setting["tau"], setting.get("omega")) if several else ""
                key = split_key(set_name, split, name)
                first = dataset[0]
                target_size = (first["hq"] if paired else first["lq"]).shape[-1]
                restore = self.restorer(network, setting, key, target_size)
                values, rows, grid = self._evaluate_split(
                    restore, dataset, paired, fid_reference, target_size, device, shard
                )
                results.update({metric_key(set_name, split, m, name): v for m, v in values.items()})
                if trainer.is_global_zero:
                    self._log_media(trainer, key, rows, grid)
        network.train(was_training)
        self.last_results = results
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(results, step=trainer.global_step)
            if self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                (self.out_dir / f"results_step{trainer.global_step:07d}.json").write_text(json.dumps(results, indent=2))
            log.info("evaluator step %d: %s", trainer.global_step, {k: round(v, 4) for k, v in results.items()})
        return results

    def _evaluate_split(
        self,
        restore: Restore,
        dataset: Dataset,
        paired: bool,
        fid_reference: str | None,
        target_size: int,
        device: torch.device,
        shard: tuple[int, int],
    ) -> tuple[dict[str, float], list[dict[str, Any]], torch.Tensor | None]:
        scorer = self._scorer(paired, fid_reference, device)
        scorer.reset()
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=ShardSampler(len(dataset), *shard),  # (world size, rank)
            collate_fn=group_by_size,
        )
        rows: list[dict[str, Any]] = []
        grid = []
        for groups in loader:
            for batch in groups:  # same-size images, scored as `eval` scores its saved outputs
                lq = batch["lq"].to(device)
                hq = batch["hq"].to(device) if paired else None
                gray = batch["hq_gray"].to(device) if "hq_gray" in batch else None  # a JPEG ground truth's own gray
                output, scored = scorer.score(batch["name"], restore(lq, batch["name"]), hq, target_gray=gray)
                shown = resize(lq, output.shape[-1])
                for i, row in enumerate(scored):
                    rows.append({**row, "thumb": (shown[i], output[i], None if hq is None else hq[i])})
                for i in range(min(lq.shape[0], self.log_images - len(grid))):
                    tiles = [shown[i], output[i]] + ([hq[i]] if hq is not None else [])
                    grid.append(resize(torch.stack(tiles), target_size).cpu())
        values = scorer.compute()  # syncs the float64 sums across ranks
        return values, rows, (torch.cat(grid) if grid else None)

    def _log_media(self, trainer: pl.Trainer, key: str, rows: list[dict[str, Any]], grid: torch.Tensor | None) -> None:
        name = key.replace("/", "_")
        grid_path = None
        if grid is not None and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            grid_path = self.out_dir / f"{name}_step{trainer.global_step:07d}.png"
            nrow = 3 if rows and rows[0]["thumb"][2] is not None else 2
            save_grid(grid, grid_path, nrow=nrow)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                if grid_path is not None:  # input | output | GT rows
                    logger.log_image(f"{key}/grid", [str(grid_path)], step=trainer.global_step)

                metrics = [k for k in rows[0] if k not in ("name", "thumb")] if rows else []
                data = []
                for row in rows[: max(self.log_images, 1) * 4]:
                    thumbs = [
                        wandb.Image(((t.float().cpu() + 1) / 2).clamp(0, 1)) if t is not None else None
                        for t in row["thumb"]
                    ]
                    data.append([row["name"], *thumbs, *[row[m] for m in metrics]])
                logger.log_table(
                    f"{key}/per_image",
                    columns=["name", "input", "output", "gt", *metrics],
                    data=data,
                    step=trainer.global_step,
                )


class DR2Evaluator(BenchmarkEvaluator):
    """DDPM training: the DR2 pipeline of the EMA UNet (+ an optional fixed enhancer) at each evaluation."""

    def __init__(self, *args: Any, enhancer: nn.Module | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enhancer = enhancer

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.diffusion = pl_module.diffusion_config  # DR2 runs the process the module trains
        super().setup(trainer, pl_module, stage)

    def restorer(self, network: nn.Module, setting: dict[str, Any], key: str, target_size: int) -> Restore:
        pipe = DR2E(
            network,
            self.enhancer,
            N=setting["N"],
            tau=setting["tau"],
            omega=setting.get("omega"),
            respacing=self.respacing,
            diffusion=self.diffusion,
            enhancer_size=target_size,
        )
        return lambda lq, names: pipe.restore_tensors(lq, seeds=self.seeds(names))["output"]


class EnhancerEvaluator(BenchmarkEvaluator):
    """Enhancer training: DR2 (frozen `unet`, run once per image) + the EMA generator, as `DR2E` at inference.

    The UNet does not change during enhancer training, so each image's DR2 output under each setting is
    computed at the first evaluation and kept on the CPU in fp32: 3 x S^2 x 4 bytes per image and setting
    (S = the UNet size; 768 KiB at 256 px, so 100 images x 3 settings ~ 230 MB), each rank keeping only its
    own shard. Every evaluation then costs one generator forward per image plus the metrics. The UNet visits
    the training device only while the cache fills and is returned to where it was.
    """

    network_attr = "generator"

    def __init__(
        self, *args: Any, unet: nn.Module, diffusion: DiffusionConfig, enhancer_size: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.unet = unet.eval().requires_grad_(False)
        self.diffusion = diffusion
        self.enhancer_size = enhancer_size
        self.dr2_outputs: dict[tuple[str, str], dict[str, Tensor]] = {}  # (setting, split key) -> name -> DR2
        self.cached = False  # True once an evaluation has run: every image of this rank's shard is cached

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        if self.cached:
            return super().evaluate(trainer, pl_module)
        home = next(self.unet.parameters()).device
        self.unet.to(pl_module.device)  # for the DR2 stage of this first evaluation only
        try:
            results = super().evaluate(trainer, pl_module)
        finally:
            self.unet.to(home)
        self.cached = True
        return results

    def restorer(self, network: nn.Module, setting: dict[str, Any], key: str, target_size: int) -> Restore:
        pipe = DR2E(
            self.unet,
            network,
            N=setting["N"],
            tau=setting["tau"],
            omega=setting.get("omega"),
            respacing=self.respacing,
            diffusion=self.diffusion,
            enhancer_size=self.enhancer_size,
        )
        cache = self.dr2_outputs.setdefault((setting_name(setting["N"], setting["tau"], setting.get("omega")), key), {})

        def restore(lq: Tensor, names: Sequence[str]) -> Tensor:
            missing = [i for i, name in enumerate(names) if name not in cache]
            if missing:
                dr2 = pipe.remove_degradation(lq[missing], seeds=self.seeds([names[i] for i in missing]))
                cache.update({names[i]: out.cpu() for i, out in zip(missing, dr2, strict=True)})
            return pipe.enhance(torch.stack([cache[name] for name in names]).to(lq.device))

        return restore
