"""`python -m lightning_dr2 <command>`: one entry point for every job of the framework."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

log = logging.getLogger("lightning_dr2")


def _cmd_train(args: argparse.Namespace) -> int:
    from lightning_dr2.config import load_config
    from lightning_dr2.train import train_ddpm

    cfg = load_config(args.experiment, args.overrides)
    result = train_ddpm(cfg)
    if result.trainer.is_global_zero:
        print(f"run directory:  {result.run_dir}")
        print(f"exported UNet:  {result.export_path}")
        if result.sample_grid:
            print(f"sample grid:    {result.sample_grid}")
        if result.loss_curve:
            print(f"loss curve:     {result.loss_curve}")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from lightning_dr2.quickstart import run_quickstart

    run_quickstart(args.overrides)
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from lightning_dr2.restore import restore_main

    return restore_main(args.input, args.output, args.config, args.overrides)


def _cmd_weights(args: argparse.Namespace) -> int:
    from lightning_dr2.weights import weights_main

    return weights_main(args.fetch, args.fetch_all, args.weights_dir, args.json)


def _cmd_config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from lightning_dr2.config import load_config

    print(OmegaConf.to_yaml(load_config(args.experiment, args.overrides)))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lightning_dr2.datasets.synthetic import synth_main

    synth_main(n=args.n, size=args.size, out=args.out, seed=args.seed)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lightning_dr2.train import export_checkpoint

    print(export_checkpoint(args.checkpoint, args.out))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from lightning_dr2.bench import run_benchmark

    result = run_benchmark(args.what, args.overrides, out=args.out)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightning_dr2", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a DDPM: train EXPERIMENT [key=value ...]")
    p.add_argument("experiment", help="name in experiments/ (e.g. ddpm_tiny) or a YAML path")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer.devices=8 data.root=/data/ffhq")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("quickstart", help="synthetic faces -> tiny DDPM -> samples and loss curve, on CPU")
    p.add_argument("overrides", nargs="*", help="overrides of experiments/quickstart.yaml")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("restore", help="restore a folder of faces with DR2 + enhancer (multi-GPU, resumable)")
    p.add_argument("--input", required=True, help="folder of aligned LQ faces (searched recursively)")
    p.add_argument("--output", required=True, help="output folder (mirrors the input tree)")
    p.add_argument(
        "--config", default=None, help="optional YAML with RestoreConfig keys (see experiments/restore_*.yaml)"
    )
    p.add_argument(
        "overrides", nargs="*", help="e.g. dr2.N=8 dr2.tau=35 enhancer.name=none batch_size=16 unet_weights=FILE"
    )
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser("weights", help="list expected weight files, where they are looked for, checksums; fetch")
    p.add_argument("--fetch", nargs="+", metavar="NAME", help="download these files (those with a public URL)")
    p.add_argument("--fetch-all", action="store_true", help="download every missing file that has a public URL")
    p.add_argument("--weights-dir", default=None, help="look here first (and download here); default $DR2_WEIGHTS")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.set_defaults(func=_cmd_weights)

    p = sub.add_parser("config", help="print the resolved config of an experiment with overrides")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("synth", help="generate procedural synthetic faces")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default="data/synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("export", help="export the EMA UNet of a training checkpoint as a plain state dict")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="benchmarks with JSON output (device, dtype, batch, img/s, peak memory)")
    p.add_argument("what", choices=["train", "restore"], help="what to measure")
    p.add_argument(
        "overrides", nargs="*", help="key=value: batch=16 size=256 flags=dr2|tiny compile=true dtype=bf16 steps=20"
    )
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from lightning_dr2.config import ConfigError
    from lightning_dr2.nets.loading import WeightsError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, WeightsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
