"""Benchmarks: they run on CPU with tiny networks and report what they measured, with the device."""

from __future__ import annotations

import json

import pytest

from lightning_dr2.config.loader import ConfigError
from lightning_dr2.jobs.bench import (
    CacheBenchOptions,
    EnhancerBenchOptions,
    EvalBenchOptions,
    EvalJobBenchOptions,
    RestoreBenchOptions,
    TrainBenchOptions,
    load_options,
    run_benchmark,
)


def test_bench_train_reports_device_dtype_batch(tmp_path) -> None:
    out = tmp_path / "train.json"
    result = run_benchmark("train", ["batch=2", "steps=1", "warmup=1"], out=out)
    assert json.loads(out.read_text()) == result
    assert result["device_type"] == "cpu" and result["dtype"] == "fp32" and result["batch"] == 2
    assert result["img_per_s"] > 0 and result["peak_memory_gib"] > 0 and result["compile"] is False


def test_bench_restore_counts_unet_calls() -> None:
    result = run_benchmark("restore", ["batch=1", "tau=10"])  # N=8: omega = tau + 25
    assert result["omega"] == 35 and result["unet_calls_per_image"] == 26
    assert result["ms_per_image"] > 0 and result["enhancer"] == "sparnethd"


def test_bench_eval_reports_overhead_fraction() -> None:
    result = run_benchmark("eval", ["batch=2", "tau=30", "metrics=psnr,ssim"])
    assert result["overhead_fraction"] == pytest.approx(
        (result["metrics_ms_per_image"] + result["png_io_ms_per_image"]) / result["restore_ms_per_image"], rel=1e-2
    )


@pytest.mark.parametrize(
    ("what", "options", "fields"),
    [
        ("enhancer", ["batch=2", "steps=1", "warmup=1", "vgg=false"], {"preset": "tiny", "image_size": 32}),
        ("dr2-cache", ["images=2", "batch=2", "N=4", "tau=2"], {"unet_flags": "tiny", "images": 2}),
    ],
)
def test_new_benchmarks_write_json_with_device_dtype_batch(what, options, fields, tmp_path) -> None:
    out = tmp_path / f"{what}.json"
    result = run_benchmark(what, options, out=out)
    assert json.loads(out.read_text()) == result
    assert result["benchmark"] == what and result["device_type"] == "cpu" and result["device"].startswith("CPU")
    assert result["dtype"] == "fp32" and result["batch"] == 2
    assert result["img_per_s"] > 0 and result["peak_memory_gib"] > 0
    assert fields.items() <= result.items()


def test_bench_eval_job_times_the_whole_job_with_networks_loaded_once() -> None:
    result = run_benchmark("eval-job", ["splits=2", "settings=1", "images=1", "enhancer=none", "metrics=psnr"])
    assert result["benchmark"] == "eval-job" and result["device_type"] == "cpu"
    assert (result["splits"], result["settings"], result["rows"], result["network_loads"]) == (2, 1, 2, 1)
    assert result["job_s"] > 0 and result["network_load_s"] > 0
    # loading per split and setting (before issue 14) costs one more load per extra job
    assert result["per_job_loading_s"] == pytest.approx(result["job_s"] + result["network_load_s"], abs=2e-3)
    loading = run_benchmark("eval-job", ["load_only=true", "enhancer=tiny"])
    assert loading["network_load_s"] > 0 and "job_s" not in loading


@pytest.mark.parametrize(
    ("schema", "option", "words"),
    [
        (TrainBenchOptions, "batchsize=3", ["'batchsize'", "command-line override 'batchsize=3'"]),
        (RestoreBenchOptions, "batch=many", ["'batch'", "many"]),
        (EvalBenchOptions, "check=maybe", ["'check'", "maybe"]),
        (TrainBenchOptions, "flags=huge", ["flags", "huge", "tiny"]),
        (RestoreBenchOptions, "dtype=int8", ["dtype", "int8", "bf16"]),
        (EnhancerBenchOptions, "preset=huge", ["preset", "huge", "sparnethd"]),
        (EnhancerBenchOptions, "dtype=fp16", ["dtype", "fp16", "bf16"]),
        (CacheBenchOptions, "flags=huge", ["flags", "huge", "dr2"]),
        (EvalJobBenchOptions, "enhancer=gfpgan", ["enhancer", "gfpgan", "sparnethd"]),
        (EvalJobBenchOptions, "splits=9", ["splits=9", "[1, 4]"]),
    ],
)
def test_bad_benchmark_options_are_named(schema, option, words) -> None:
    with pytest.raises(ConfigError) as err:
        load_options(schema, [option])
    for word in words:
        assert word in str(err.value)


def test_benchmark_options_are_typed_and_device_aware() -> None:
    opts = load_options(EvalBenchOptions, ["batch=3", "compile=true", "metrics=psnr"])
    assert opts.batch == 3 and opts.compile is True and opts.metrics == "psnr" and opts.N == 8
    assert TrainBenchOptions.for_device(True).flags == "dr2" and TrainBenchOptions.for_device(False).flags == "tiny"
    assert EvalBenchOptions.for_device(True).batch == RestoreBenchOptions.for_device(True).batch
    assert EnhancerBenchOptions.for_device(True).preset == "sparnethd" and EnhancerBenchOptions().preset == "tiny"
    assert CacheBenchOptions.for_device(True).flags == "dr2" and CacheBenchOptions().flags == "tiny"
    with pytest.raises(ConfigError, match="unknown benchmark"):
        run_benchmark("nope", [])
