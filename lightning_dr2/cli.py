"""`python -m lightning_dr2 <command>`: one entry point for every job of the framework."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("lightning_dr2")


def _print_outputs(outputs: dict[str, Any]) -> None:
    """`label: value` lines, aligned, for the outputs a job made (None: not made, not shown)."""
    width = max(map(len, outputs)) + 2
    for label, value in outputs.items():
        if value:
            print(f"{label + ':':<{width}}{value}")


def _cmd_train(args: argparse.Namespace) -> int:
    from lightning_dr2.config.ddpm import DDPMConfig
    from lightning_dr2.config.recipes import load_config
    from lightning_dr2.jobs.train_ddpm import train_ddpm

    cfg = load_config(args.experiment, args.overrides, schema=DDPMConfig)
    result = train_ddpm(cfg)
    if result.trainer.is_global_zero:
        _print_outputs(
            {
                "run directory": result.run_dir,
                "exported UNet": result.export_path,
                "sample grid": result.sample_grid,
                "loss curve": result.loss_curve,
            }
        )
    return 0


def _cmd_train_enhancer(args: argparse.Namespace) -> int:
    from lightning_dr2.config.enhancer import EnhanceExperimentConfig
    from lightning_dr2.config.recipes import load_config
    from lightning_dr2.jobs.train_enhancer import train_enhancer

    cfg = load_config(args.experiment, args.overrides, schema=EnhanceExperimentConfig)
    result = train_enhancer(cfg)
    if result.trainer.is_global_zero:
        export = f"{result.export_path} (use: enhancer.weights={result.export_path})"
        _print_outputs({"run directory": result.run_dir, "exported enhancer": export, "validation grid": result.grid})
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from lightning_dr2.jobs.quickstart import run_quickstart

    result = run_quickstart(args.overrides, progress=print, from_scratch=args.from_scratch)
    print(result.summary())
    return 0


def _print_bad(summary: Any, what: str, shown: int = 20) -> None:
    """The inputs a predict job could not use (and outputs it flagged), and the earlier outputs it skipped."""
    if summary.bad:
        print(f"{len(summary.bad)} {what} unusable or outputs flagged (listed in {summary.output / 'bad_files.txt'}):")
        for rel, reason in summary.bad[:shown]:
            print(f"  {rel}: {reason}")
    for folder in summary.earlier_outputs:
        print(f"skipped {folder}: it holds an earlier job's outputs (its manifest.json), not inputs")


def _cmd_restore(args: argparse.Namespace) -> int:
    from lightning_dr2.config.pipeline import RestoreConfig
    from lightning_dr2.config.recipes import load_config
    from lightning_dr2.jobs.restore import TINY_INPUT, run_restore

    cfg = load_config(args.config, args.overrides, schema=RestoreConfig)
    cfg.input, cfg.output = args.input, args.output
    if cfg.mode == "photos":
        from lightning_dr2.jobs.restore_photos import run_restore_photos

        summary = run_restore_photos(cfg)
        print(summary.describe())
        _print_bad(summary, "inputs")
        return 0
    summary = run_restore(cfg)
    print(
        f"restored {summary.restored} images ({summary.skipped} reused: same input, weights and settings; "
        f"{summary.recomputed} made again: made earlier with other ones) in {summary.seconds:.1f} s "
        f"-> {summary.output}"
    )
    if summary.reshaped:
        print(f"{summary.reshaped} non-square inputs made square (input_policy={cfg.input_policy})")
    if summary.tiny:
        print(f"{summary.tiny} inputs smaller than {TINY_INPUT} px a side: expect little detail")
    _print_bad(summary, "inputs")
    return 0


def _cmd_dr2_cache(args: argparse.Namespace) -> int:
    from lightning_dr2.config.pipeline import CacheConfig
    from lightning_dr2.config.recipes import load_config
    from lightning_dr2.jobs.dr2_cache import SAMPLE_DIR, run_cache

    cfg = load_config(args.config, args.overrides, schema=CacheConfig)
    cfg.hq, cfg.out = args.hq, args.out
    summary = run_cache(cfg)
    print(
        f"DR2 cache: made {summary.made} outputs ({summary.images_per_second:.2f} images/s; {summary.reused} reused: "
        f"same face, weights and settings; {summary.recomputed} made again) in {summary.seconds:.1f} s "
        f"-> {summary.output} (train with data.mode=folder data.dr2_root={summary.output / SAMPLE_DIR})"
    )
    _print_bad(summary, "faces")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    """Without fetch options: the status table (or JSON). With them: fetch each file (into --weights-dir,
    else `default_dest()`), report each result; exit status 1 if any failed."""
    from lightning_dr2.weights import WEIGHTS, fetch_each, format_table, list_weights, missing_files

    if args.needed_for:  # the files one eval recipe needs, present or not, and where to get each
        from lightning_dr2.config.pipeline import EvalConfig
        from lightning_dr2.config.recipes import load_config
        from lightning_dr2.jobs.needs import eval_needs
        from lightning_dr2.weights import format_needed, needed_rows

        needed = needed_rows(eval_needs(load_config(args.needed_for, [], schema=EvalConfig)), args.weights_dir)
        title = f"Files needed by eval {args.needed_for}:"
        print(json.dumps(needed, indent=2) if args.json else format_needed(needed, title, args.weights_dir))
        return 0
    if not args.fetch and not args.fetch_all:
        rows = list_weights(args.weights_dir)
        print(json.dumps(rows, indent=2) if args.json else format_table(rows, args.weights_dir))
        return 0
    from lightning_dr2.outputs import check_output_location
    from lightning_dr2.weights.lookup import default_dest

    check_output_location(args.weights_dir or default_dest(), "--weights-dir")  # fetching writes there
    names, manual = missing_files(args.weights_dir) if args.fetch_all else ([], [])
    names = list(dict.fromkeys([*(args.fetch or []), *names]))
    results = fetch_each(names, args.weights_dir)
    if args.json:
        print(json.dumps({"results": results, "manual": manual}, indent=2))
    else:
        if not names:
            print("Every file with a download URL is present.")
        for r in results:
            if r["ok"]:
                print(f"{r['name']}: {'downloaded to' if r['downloaded'] else 'already present at'} {r['path']}")
            else:
                print(f"{r['name']}: FAILED\n{r['error']}", file=sys.stderr)
        for name in manual:
            print(f"{name}: not fetched, no direct URL; manual download: {WEIGHTS[name].source}")
    return 0 if all(r["ok"] for r in results) else 1


def _cmd_eval(args: argparse.Namespace) -> int:
    from lightning_dr2.config.pipeline import EvalConfig
    from lightning_dr2.config.recipes import load_config
    from lightning_dr2.jobs.evaluate import run_eval
    from lightning_dr2.report import metrics_table

    overrides = list(args.overrides) + (["reference=true"] if args.reference else [])
    result = run_eval(load_config(args.experiment, overrides, schema=EvalConfig))
    if result.report_md is None:  # a non-zero rank under torchrun/srun: rank 0 reports
        return 0
    print(metrics_table(result.table_rows))
    for metric, note in result.notes.items():
        print(f"note: {metric}: {note}")
    print(f"\nresults: {result.run_dir / 'results.json'}\nreport:  {result.report_md}\nhtml:    {result.report_html}")
    return 0


def _cmd_testset(args: argparse.Namespace) -> int:
    from lightning_dr2.datasets.testset_builder import build_testset
    from lightning_dr2.datasets.testsets import LQ_DIR, MANIFEST

    report = build_testset(
        args.hq, args.out, args.spec, overwrite=args.overwrite, limit=args.limit, workers=args.workers
    )
    spec = report.spec
    print(
        f"{report.out}: test set '{spec.name}' (spec {spec.spec_hash()[:12]}), {len(spec.splits)} splits x "
        f"{report.images} images at {spec.hq_size}px; {report.written} files written, {report.reused} already present"
    )
    for name in spec.splits:
        print(f"  {name}: {report.out / name / LQ_DIR}")
    if report.bad_files:
        print(f"  {len(report.bad_files)} bad HQ file(s) skipped (see bad_files in {report.out / MANIFEST})")
    return 0


def _cmd_fid_stats(args: argparse.Namespace) -> int:
    from lightning_dr2.metrics.fid import compute_fid_stats

    result = compute_fid_stats(
        args.folder, args.out, batch_size=args.batch_size, device=args.device, weights_dir=args.weights_dir
    )
    print(f"{result.stats.count} images -> {result.path} ({len(result.skipped)} unreadable files skipped)")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    """The Markdown table on stdout (pipeable), the written files on stderr (bad input: CompareError, exit 2)."""
    from lightning_dr2.jobs.compare import compare

    result = compare(
        args.runs, args.metrics, args.out, args.wandb_project, plot=not args.no_plot, published=args.published
    )
    print(result.markdown)
    for path in result.files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from lightning_dr2.config.recipes import load_config, schema_for

    print(OmegaConf.to_yaml(load_config(args.experiment, args.overrides, schema=schema_for(args.experiment))))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lightning_dr2.datasets.synthetic import generate_faces

    generate_faces(args.out, n=args.n, size=args.size, seed=args.seed, progress=True, flag="--out")
    print(f"{args.out}: {args.n} synthetic faces at {args.size}x{args.size}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lightning_dr2.jobs.export import export_checkpoint

    print(export_checkpoint(args.checkpoint, args.out))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from lightning_dr2.jobs.bench import run_benchmark

    result = run_benchmark(args.what, args.overrides, out=args.out)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from lightning_dr2.demo.app import import_gradio, launch, pick_device
    from lightning_dr2.demo.models import resolve_models

    if args.render_examples:
        from lightning_dr2.demo.examples import render_examples
        from lightning_dr2.demo.handler import DemoSession

        models = resolve_models(args.weights_dir)
        print(f"models: {models.notice}")
        for example in render_examples(DemoSession(models, pick_device(args.device)), args.render_examples):
            print(f"{example.path}: {example.status}")
        return 0
    try:
        import_gradio()  # before any model is looked for: a missing extra is the first thing to say
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own startup probes of the page
    models = resolve_models(args.weights_dir)
    app, url = launch(args.port, device=args.device, block=False, models=models)
    print(f"models: {models.notice}\ndemo running on {url} (this machine only; Ctrl+C stops it)")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl+C also when started from a script
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        app.close()
    return 0


def _add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """The `key=value` overrides every config-driven command takes (before, between or after its flags)."""
    parser.add_argument("overrides", nargs="*", help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightning_dr2", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Subcommand)

    p = sub.add_parser("train", help="train a DDPM: train EXPERIMENT [key=value ...]")
    p.add_argument("experiment", help="name in experiments/ (e.g. ddpm_tiny) or a YAML path")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. trainer.devices=8 data.root=/data/ffhq")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("train-enhancer", help="train an enhancer on DR2 outputs: EXPERIMENT [key=value]")
    p.add_argument("experiment", help="name in experiments/ (e.g. enhance_tiny, enhance_sparnethd) or a YAML path")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.hq_root=/data/ffhq trainer.devices=8")
    p.set_defaults(func=_cmd_train_enhancer)

    p = sub.add_parser(
        "quickstart",
        help="synthetic faces -> tiny DDPM trained here; DR2 -> enhancer -> DR2 vs DR2+enhancer report with the "
        "shipped demo networks (or, --from-scratch, the ones trained here), on CPU",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="run DR2 and the benchmark with the networks trained here (DDPM + enhancer) instead of the shipped "
        "demo networks of experiments/quickstart_weights (about 1 minute more, weaker numbers)",
    )
    _add_overrides(p, "overrides of experiments/quickstart.yaml; enhance.<key>=value: of the enhancer (--from-scratch)")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("restore", help="restore a folder of faces with DR2 + enhancer (multi-GPU, resumable)")
    p.add_argument(
        "--input", required=True, help="folder of aligned LQ faces, or of whole photos with mode=photos (recursive)"
    )
    add_output(p, "--output", required=True, help="output folder (mirrors the input tree)")
    p.add_argument(
        "--config", default=None, help="optional YAML with RestoreConfig keys (see experiments/restore_*.yaml)"
    )
    _add_overrides(
        p, "e.g. dr2.N=8 dr2.tau=35 enhancer.name=none batch_size=16 unet_weights=FILE; mode=photos faces.upscale=2"
    )
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser("dr2-cache", help="DR2 outputs of a face folder for enhancer training (multi-GPU, resumable)")
    p.add_argument("--hq", required=True, help="folder of aligned HQ faces (searched recursively)")
    add_output(p, "--out", required=True, help="cache folder: OUT/dr2/<rel>.png (+ OUT/dr2_s<k>/ extra samples)")
    p.add_argument("--config", default=None, help="optional YAML with CacheConfig keys (experiments/dr2_cache.yaml)")
    p.add_argument("overrides", nargs="*", help="e.g. unet_weights=FILE samples_per_image=2 devices=8 batch_size=16")
    p.set_defaults(func=_cmd_dr2_cache)

    p = sub.add_parser("weights", help="list expected weight files, where they are looked for, checksums; fetch")
    p.add_argument("--fetch", nargs="+", metavar="NAME", help="download these files (those with a public URL)")
    p.add_argument("--fetch-all", action="store_true", help="download every missing file that has a public URL")
    p.add_argument("--weights-dir", default=None, help="look here first (and download here); default $DR2_WEIGHTS")
    p.add_argument("--json", action="store_true", help="print the listing as JSON")
    p.add_argument(
        "--for",
        dest="needed_for",
        metavar="RECIPE",
        help="only the files an eval recipe needs (e.g. eval_dr2_table), what needs each, and how to get it",
    )
    p.set_defaults(func=_cmd_weights)

    p = sub.add_parser("eval", help="evaluate DR2 (+ enhancer) on benchmark sets: PSNR, SSIM, LPIPS, FID, Deg")
    p.add_argument("experiment", help="eval recipe, e.g. experiments/eval_celeba_test.yaml or eval_celeba_test")
    p.add_argument("overrides", nargs="*", help="e.g. unet_weights=FILE devices=8 'settings=[{N: 8, tau: 35}]'")
    p.add_argument("--reference", action="store_true", help="also score the LQ inputs themselves (the 'Input' row)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("testset", help="build a benchmark set (CelebA-Test grid) from HQ faces")
    p.add_argument("--hq", required=True, help="folder of HQ faces (e.g. the CelebA-HQ test images)")
    add_output(p, "--out", required=True, help="output folder: hq/, <split>/lq/, manifest.json")
    p.add_argument("--spec", default="celeba_test", help="spec name in experiments/testsets/ or a YAML path")
    p.add_argument("--overwrite", action="store_true", help="replace a set built from another spec")
    p.add_argument("--limit", type=int, default=None, help="only the first N HQ images")
    p.add_argument("--workers", type=int, default=0, help="worker processes")
    p.set_defaults(func=_cmd_testset)

    p = sub.add_parser("fid-stats", help="FID reference statistics (mu, sigma) of a folder, saved as .npz")
    p.add_argument("folder")
    add_output(p, "--out", "file", required=True, help="output .npz")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default=None)
    p.add_argument("--weights-dir", default=None)
    p.set_defaults(func=_cmd_fid_stats)

    p = sub.add_parser("compare", help="compare evaluation runs (local results.json or W&B) as a table and plot")
    p.add_argument("runs", nargs="*", help="run directories (or folders holding them)")
    p.add_argument("--metrics", nargs="+", default=None, help="psnr ssim lpips fid deg (fid: all FID columns)")
    add_output(p, "--out", default=None, help="where to write comparison.md/.html/.csv/.png (default runs/compare)")
    p.add_argument("--wandb-project", default=None, help="ENTITY/PROJECT: read runs from the W&B API")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--published",
        action="append",
        default=[],
        metavar="TABLE",
        help="add a table of published numbers (experiments/published/<TABLE>.yaml or a path), marked, never ranked",
    )
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("config", help="print the resolved config of an experiment with overrides")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("synth", help="generate procedural synthetic faces")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=64)
    add_output(p, "--out", default="data/synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("export", help="export the EMA network of a training checkpoint (UNet or enhancer)")
    p.add_argument("checkpoint", help="a .ckpt of `train` (the EMA UNet) or of `train-enhancer` (the EMA generator)")
    add_output(p, "--out", "file", required=True, help="the .pt to write (and its .json sidecar beside it)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="benchmarks with JSON output (device, dtype, batch, img/s, peak memory)")
    benchmarks = ["train", "restore", "eval", "eval-job", "enhancer", "dr2-cache", "restorers"]
    p.add_argument("what", choices=benchmarks, help="what to measure")
    _add_overrides(
        p,
        "key=value (bench.TrainBenchOptions, RestoreBenchOptions, EvalBenchOptions, EvalJobBenchOptions, "
        "EnhancerBenchOptions, CacheBenchOptions, RestorersBenchOptions): batch=16 flags=dr2|tiny "
        "preset=sparnethd|tiny compile=true "
        "dtype=bf16 steps=20",
    )
    add_output(p, "--out", "file", default=None, help="also write the JSON here")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="local web demo (Gradio on 127.0.0.1): upload a photo, see DR2 and the restored")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    p.add_argument(
        "--share", choices=["never"], default="never", help="the page is never shared: it listens on 127.0.0.1 only"
    )
    p.add_argument("--weights-dir", default=None, help="look for released weights here first (default $DR2_WEIGHTS)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:1 (default: cuda when there is one)")
    add_output(
        p,
        "--render-examples",
        metavar="DIR",
        default=None,
        help="instead of serving: restore the two packaged photos with the demo's models into DIR/demo_<name>.png",
    )
    p.set_defaults(func=_cmd_demo)
    return parser


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser: `key=value` overrides may come before, between or after its flags."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._mixing:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def add_output(p: argparse.ArgumentParser, flag: str, kind: str = "folder", **options: Any) -> None:
    """An option naming where a command writes: `main` checks it (`outputs.check_output_location`) before the
    command runs, so no command can forget to."""
    action = p.add_argument(flag, **options)
    p.set_defaults(outputs=[*(p.get_default("outputs") or []), (flag, action.dest, kind)])


def check_outputs(args: argparse.Namespace) -> None:
    from lightning_dr2.outputs import check_output_location

    for flag, dest, kind in getattr(args, "outputs", None) or []:
        value = getattr(args, dest, None)
        if value is not None:
            check_output_location(value, flag, kind)


REPORT_BUG = "this is a bug in lightning_dr2: please report it with the command line and the traceback above"


def error_message(err: BaseException) -> str | None:
    """What to tell the user about `err` (exit status 2), or None for an unexpected error (a bug: exit 1).

    The one map from the framework's error types to messages: configuration and weights errors, output
    locations, undecodable images, and every OS error (named path, what went wrong, what to do)."""
    from lightning_dr2.config.loader import ConfigError
    from lightning_dr2.image_io import BadImageError
    from lightning_dr2.nets.loading import WeightsError
    from lightning_dr2.outputs import OutputError, os_error_message

    if isinstance(err, BadImageError):
        return f"{err}; replace or remove the file, then rerun (finished outputs are reused)"
    if isinstance(err, OSError) and err.errno is not None:
        return os_error_message(err)
    if isinstance(err, (ConfigError, WeightsError, OutputError, OSError, ValueError)):  # ValueError: ReuseRefused, ...
        return _without_worker_traceback(str(err))
    return None


def _without_worker_traceback(message: str) -> str:
    """A DataLoader worker's error arrives as 'Caught X in DataLoader worker ... Original Traceback ...': keep
    the error's own last line, without the traceback."""
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; exit status 0 done, 2 a user error (a message, no traceback), 1 a failed training (a
    message) or a bug (the traceback and a request to report it), 143 interrupted (resumable)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from lightning_dr2.callbacks.preemption import TrainingInterrupted
    from lightning_dr2.modules.guards import NonFiniteTrainingError

    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except TrainingInterrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 128 + signal.SIGTERM  # the shell's code for a SIGTERM'd job: not finished, resumable
    except NonFiniteTrainingError as err:
        if args.verbose:
            raise
        print(f"error: {err}\n(run with -v for the traceback)", file=sys.stderr)
        return 1  # the job ran and failed: not a usage error
    except Exception as err:
        message = error_message(err)
        if message is None:
            traceback.print_exc()
            print(f"\nerror: {type(err).__name__}: {err}\n{REPORT_BUG}", file=sys.stderr)
            return 1
        if args.verbose:
            raise
        print(f"error: {message}\n(run with -v for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
