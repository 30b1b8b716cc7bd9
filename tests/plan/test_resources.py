"""Cluster requests (mem_mb, runtime) grow with what drives each job, and cover what
the jobs of a real run used."""

from __future__ import annotations

import csv

import pytest
import zarr
from conftest import tiny_config

from visual_ablation.plan import resources, stages
from visual_ablation.plan.config import resolve

DATA = {"n": 100_000, "image_size": 64}
PROBE = {"max_epochs": 300, "hidden": 0}


def feature_spec(n, side=64):
    return {"dataset": {"n": n, "image_size": 64}, "backbone": {"image_size": side}}


def fake_store(path, **attrs):
    zarr.open_group(path, mode="w").attrs.update({"complete": True, **attrs})
    return str(path)


def test_feature_memory_follows_batch_and_side_not_images():
    small, large = feature_spec(2_000), feature_spec(200_000)
    assert resources.features_mem_mb(small, 256) == resources.features_mem_mb(large, 256)
    assert resources.features_mem_mb(small, 512) > resources.features_mem_mb(small, 256)
    assert resources.features_mem_mb(feature_spec(2_000, 224), 256) > 3 * (
        resources.features_mem_mb(small, 256) - resources.FEATURES_BASE_MB
    )
    # time follows the images, above a fixed minimum
    minimum = resources.MIN_RUNTIME
    assert resources.features_runtime(large, None) - minimum > 50 * (
        resources.features_runtime(small, None) - minimum
    )


def test_train_requests_come_from_the_stores_it_reads(tmp_path):
    data = fake_store(tmp_path / "data.zarr", n=50_000)
    narrow = fake_store(tmp_path / "narrow.zarr", dims={"a": 32, "b": 96})
    wide = fake_store(tmp_path / "wide.zarr", dims={"a": 1280, "b": 2048})
    spec = {"n": None, "image_size": 64}  # a whole folder: its size known once decoded
    assert resources.n_images(spec, data) == 50_000
    assert resources.n_images(spec) == resources.UNKNOWN_N
    # an image folder's manifest counts its images before anything is decoded
    folder = {**spec, "source": "imagefolder", "manifest": {"files": 24, "sha256": "-"}}
    assert resources.n_images(folder) == 24
    assert resources.data_runtime(folder) == resources.MIN_RUNTIME + 1
    mem_narrow = resources.train_mem_mb(spec, data, narrow)
    mem_wide = resources.train_mem_mb(spec, data, wide)
    extra = (50_000 * (1280 + 2048)) * resources.TRAIN_BYTES_PER_VALUE / 2**20
    assert mem_wide == pytest.approx(resources.TRAIN_BASE_MB + extra, abs=1)
    assert mem_narrow < mem_wide
    # an unfinished store is not trusted: the wide default stands in for it
    unfinished = tmp_path / "unfinished.zarr"
    zarr.open_group(unfinished, mode="w").attrs.update({"complete": False, "dims": {"a": 1}})
    assert resources.total_width(str(unfinished)) == resources.UNKNOWN_WIDTH
    minimum = resources.MIN_RUNTIME
    ten = resources.train_runtime(spec, PROBE, 10, data, wide) - minimum
    assert ten > 9 * (resources.train_runtime(spec, PROBE, 1, data, wide) - minimum)
    mlp = resources.train_runtime(spec, {**PROBE, "hidden": 256}, 1, data, wide)
    assert mlp > resources.train_runtime(spec, PROBE, 1, data, wide)
    # a grid of weight decays trains a head per value: as many runs' work
    grid = resources.train_runtime(spec, {**PROBE, "weight_decay": [0.0, 1.0]}, 5, data, wide)
    assert grid == resources.train_runtime(spec, PROBE, 10, data, wide)


def test_a_data_job_asks_for_its_render_processes():
    shapes = {**DATA, "source": "synthetic-shapes"}
    folder = {**DATA, "source": "imagefolder"}  # decoded in the job's own process
    assert resources.data_threads(shapes, 4) == 4
    assert resources.data_threads(folder, 4) == 1
    one = resources.data_mem_mb(shapes)
    assert resources.data_mem_mb(shapes, threads=4) >= one + 4 * resources.DATA_WORKER_MB


def test_each_retry_asks_for_more():
    spec = feature_spec(100_000)
    assert resources.features_mem_mb(spec, 256, attempt=2) == 2 * resources.features_mem_mb(
        spec, 256
    )
    assert resources.data_runtime(DATA, attempt=2) == 2 * resources.data_runtime(DATA)


@pytest.mark.workflow
def test_requests_cover_what_the_jobs_of_a_run_used(workflow_copy):
    """Snakemake's benchmark files record each job's peak RSS: every one is under the
    mem_mb the job would ask a cluster for."""
    config = tiny_config(runs=1)
    workflow_copy.write_config(config)
    workflow_copy.run()
    exp = resolve(config)
    results = workflow_copy.workdir / "results"

    def peak_mb(tsv):
        return float(next(csv.DictReader(open(tsv), delimiter="\t"))["max_rss"])

    checked = 0
    for d, b, r in stages.features.jobs(exp):
        data_store, store = exp.data_store(d), exp.feature_store(d, b, r)
        wanted = resources.features_mem_mb(exp.feature_spec(d, b, r), 64)
        used = peak_mb(results / "benchmarks" / "features" / d / b / f"{r}.tsv")
        assert 0 < used < wanted, (b, r, used, wanted)
        for probe in exp.probes:
            wanted = resources.train_mem_mb(
                exp.data_spec(d),
                str(workflow_copy.workdir / data_store),
                str(workflow_copy.workdir / store),
            )
            used = peak_mb(
                results / "benchmarks" / "train" / d / b / r / "class" / probe / "run0.tsv"
            )
            assert 0 < used < wanted, (b, r, probe, used, wanted)
            checked += 1
    used = peak_mb(results / "benchmarks" / "prepare_data" / "digits.tsv")
    assert 0 < used < resources.data_mem_mb(exp.data_spec("digits"))
    assert checked == 8


def test_a_constant_override_of_a_cluster_rule_is_named_with_its_fix():
    """A constant replaces the rule's own request, which grows with attempt; an expression of
    attempt, a local rule and a resource that does not scale pass unnamed."""
    warnings = resources.constant_overrides(
        {
            "train": {"mem_mb": 16000, "runtime": "60*attempt", "gpu": 1},
            "transfer": {"runtime": "2*input.size_mb"},
            "aggregate": {"mem_mb": 100},
        },
        cluster_rules={"train", "transfer"},
    )
    assert len(warnings) == 2
    assert warnings[0].startswith("set-resources train:mem_mb=16000 does not grow")
    assert "train:mem_mb=16000*attempt" in warnings[0]
    assert "killed for memory" in warnings[0]
    assert warnings[1].startswith("set-resources transfer:runtime=2*input.size_mb")
    assert "killed for time" in warnings[1]
    assert resources.light_mem_mb(2) == 2 * resources.light_mem_mb()
    assert resources.light_runtime(3) == 3 * resources.light_runtime()
