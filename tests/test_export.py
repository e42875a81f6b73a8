"""Model Zoo export (bundle/export.py), its offline checks (bundle/check.py) and the Zoo's lint
(bundle/lint.py); the unpacked export runs on its own: inference with the exported weights and
configs/inference.yaml alone, a 2-epoch stage 1 tracked to a local MLflow store, and pruning."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigParser
from monai.data import load_decathlon_datalist
from scripts.data.record import read_dynamics
from scripts.data.synthetic import ensure_dataset

from bundle.check import (
    CheckError,
    check_files,
    check_large_files,
    check_leaks,
    check_version,
    find_schema,
    leaked_paths,
    monai_checks,
    unpack,
)
from bundle.export import DEFAULT_NAME, bundle_version, export_bundle, upload_name
from bundle.lint import lint_export

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = {"num_train": 4, "num_val": 1, "num_test": 2, "shape": [16, 16, 16]}
TINY_RUN = ["--patch_size", "[16,16,16]", "--num_workers", "0", "--val_interval", "1"]
URL = "https://example.org/zoo"
LINT_TOOLS = ("isort", "black", "flake8", "pre_commit_hooks")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _untrained_weights(path: Path, wrap: bool = False) -> Path:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    state = parser.get_parsed_content("network_def").state_dict()
    torch.save({"model": state, "optimizer": {"state": {}}} if wrap else state, path)
    return path


def _bundle(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def test_export_layout(tmp_path):
    """Every config, presets, scripts, docs, LICENSE and the weights; a zip that unpacks to <name>/."""
    model = _untrained_weights(tmp_path / "checkpoint_final.pt", wrap=True)  # a CheckpointSaver dict
    result = export_bundle(str(model), out=str(tmp_path / "dist"))
    version = bundle_version()
    bundle = Path(result["bundle_dir"])
    assert bundle.name == DEFAULT_NAME and Path(result["zip"]).name == f"{DEFAULT_NAME}_v{version}.zip"
    files = set(result["files"])
    # generic: whatever configs the checkout has (e.g. a multi_gpu_train.yaml) travels
    configs = {f"configs/{p.name}" for p in (ROOT / "configs").iterdir() if p.suffix in (".yaml", ".json", ".conf")}
    presets = {f"configs/presets/{p.name}" for p in (ROOT / "configs" / "presets").iterdir()}
    scripts = {f"scripts/{p.name}" for p in (ROOT / "scripts").glob("*.py")}
    assert configs | presets | scripts <= files
    assert {"LICENSE", "docs/README.md", "docs/data_license.txt", "models/model.pt"} <= files
    assert not [f for f in files if "__pycache__" in f or f.startswith("bundle/") or f.startswith("tests/")]
    # the weights are the network's state dict, unwrapped from the checkpoint
    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert set(weights) == set(torch.load(model, weights_only=True)["model"])
    assert leaked_paths(bundle, [str(ROOT)]) == []
    with zipfile.ZipFile(result["zip"]) as zf:
        names = zf.namelist()
    assert {n.split("/", 1)[0] for n in names} == {DEFAULT_NAME}
    assert {n.split("/", 1)[1] for n in names if not n.endswith("/")} == files
    # reproducible: the same inputs give the same zip bytes
    again = export_bundle(str(model), out=str(tmp_path / "dist2"))
    assert Path(again["zip"]).read_bytes() == Path(result["zip"]).read_bytes()


def test_large_files_leave_the_bundle(tmp_path):
    model = _untrained_weights(tmp_path / "model.pt")
    result = export_bundle(str(model), out=str(tmp_path / "dist"), max_file_mb=0.5, large_file_url_base=URL + "/")
    bundle = Path(result["bundle_dir"])
    assert not (bundle / "models" / "model.pt").exists()  # over max_file_mb: out of the bundle too
    entries = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    name = upload_name(DEFAULT_NAME, result["version"], "models/model.pt")
    assert name == f"{DEFAULT_NAME}_v{result['version']}_models_model.pt"
    assert [e["path"] for e in entries] == ["models/model.pt"] and entries[0]["url"] == f"{URL}/{name}"
    upload = tmp_path / "dist" / "upload" / name
    assert entries[0]["hash_type"] == "md5" and entries[0]["hash_val"] == _md5(upload)
    assert torch.load(upload, weights_only=True).keys() == torch.load(model, weights_only=True).keys()
    assert check_files(bundle).endswith("present")  # listed in large_files.yml, so the files check passes
    assert check_large_files(bundle).startswith("1 large file(s)")


def test_large_file_check_needs_url_and_matching_hash(tmp_path):
    model = _untrained_weights(tmp_path / "model.pt")
    bundle = Path(export_bundle(str(model), out=str(tmp_path / "dist"))["bundle_dir"])
    with pytest.raises(CheckError, match="models/model.pt: no download URL"):
        check_large_files(bundle)  # exported without --large_file_url_base
    bundle = Path(export_bundle(str(model), out=str(tmp_path / "dist"), large_file_url_base=URL)["bundle_dir"])
    assert check_large_files(bundle)
    (bundle / "docs" / "big.bin").write_bytes(b"\0" * (1024 * 1024 + 1))  # 1 MB + 1 byte, not listed
    with pytest.raises(CheckError, match=r"not in large_files.yml: \['docs/big.bin"):
        check_large_files(bundle)
    (bundle / "docs" / "big.bin").unlink()
    torch.save({"other": torch.zeros(3)}, bundle / "models" / "model.pt")
    with pytest.raises(CheckError, match="models/model.pt: its md5 differs from hash_val"):
        check_large_files(bundle)


def test_schema_lookup_takes_only_the_published_files(tmp_path):
    url = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
    path, origin = find_schema(url, tmp_path)
    assert path.name == "meta_schema_20220324.json" and "662135097106b71067cd1fc657f8720f" in origin
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "meta_schema_20220324.json").write_text("{}")  # a reconstruction, not the real file
    with pytest.raises(CheckError, match="not the published meta_schema_20220324.json"):
        find_schema(url, tmp_path, schema_dirs=[fake])


def test_checks_catch_leaks_and_version(tmp_path):
    result = export_bundle(str(_untrained_weights(tmp_path / "model.pt")), out=str(tmp_path / "dist"))
    bundle = Path(result["bundle_dir"])
    check_leaks(bundle, [str(ROOT)])
    (bundle / "docs" / "notes.md").write_text(f"trained in {ROOT}/runs\n")
    assert leaked_paths(bundle, [str(ROOT)]) == [f"docs/notes.md: {ROOT}"]
    with pytest.raises(CheckError, match="source paths"):
        check_leaks(bundle, [str(ROOT)])
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    assert check_version(bundle) == f"version {meta['version']} is in changelog"
    meta["version"] = "9.9.9"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckError, match="9.9.9"):
        check_version(bundle)
    (bundle / "LICENSE").unlink()
    with pytest.raises(CheckError, match="LICENSE"):
        check_files(bundle)


def _export_with(tmp_path: Path, edit) -> Path:
    """An untrained export whose files ``edit(bundle)`` changes."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    model = _untrained_weights(tmp_path / "model.pt")
    bundle = Path(export_bundle(str(model), out=str(tmp_path / "dist"))["bundle_dir"])
    edit(bundle)
    return bundle


def _set_schema(bundle: Path, name: str) -> None:
    path = bundle / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    meta["schema"] = meta["schema"].rsplit("/", 1)[0] + "/" + name
    path.write_text(json.dumps(meta, indent=4) + "\n")


def test_metadata_check_fails_without_optional_packages_version_on_20220324(tmp_path):
    """The 2022 schema requires optional_packages_version (the 2024 one required_packages_version, which
    the metadata has): the check validates against the schema the metadata's URL names."""
    assert "optional_packages_version" not in json.loads((ROOT / "configs" / "metadata.json").read_text())
    old = _export_with(tmp_path / "old", lambda b: _set_schema(b, "meta_schema_20220324.json"))
    [(label, ok, detail)] = monai_checks(old, tmp_path / "w1", only=["metadata schema"])
    assert label == "metadata schema" and not ok
    assert "'optional_packages_version' is a required property" in detail
    # the current schema passing is part of test_offline_checks_pass_on_the_export


def test_shape_and_torchscript_checks_fail_without_network_def_in_inference_yaml(tmp_path):
    """The Zoo passes configs/inference.yaml alone: a network_def only train.yaml defines is not found."""

    def drop_network_def(bundle: Path) -> None:
        path = bundle / "configs" / "inference.yaml"
        config = yaml.safe_load(path.read_text())
        del config["network_def"]
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    bundle = _export_with(tmp_path, drop_network_def)
    assert "network_def" in yaml.safe_load((bundle / "configs" / "train.yaml").read_text())
    results = monai_checks(bundle, tmp_path / "w", only=["verify_net_in_out", "ckpt_export TorchScript"])
    assert [(label, ok) for label, ok, _ in results] == [
        ("verify_net_in_out", False),
        ("ckpt_export TorchScript", False),
    ]
    assert all("network_def" in detail for _, _, detail in results)


def test_zoo_lint_and_hooks_find_what_they_should(tmp_path):
    """The Zoo's isort, black, flake8 (bugbear) and pre-commit hooks on a hand-made bundle: one with a
    call in a default argument, unsorted imports, a black-unformatted line, a JSON file not in the
    hook's format, a missing final newline and an unlisted 2 MB file; then its clean counterpart."""
    for tool in LINT_TOOLS:
        pytest.importorskip(tool)
    bad = tmp_path / "bad"
    (bad / "scripts").mkdir(parents=True)
    bad_code = '"""m"""\nimport sys\nimport os\n\n\ndef f(x=list( )):\n    return x, os, sys\n'
    (bad / "scripts" / "m.py").write_text(bad_code)
    (bad / "configs").mkdir()
    (bad / "configs" / "metadata.json").write_text('{"a": [1, 2]}\n')
    (bad / "docs.md").write_text("no final newline")
    (bad / "weights.bin").write_bytes(b"\0" * (2 * 1024 * 1024))
    results = {label: ok for label, ok, _ in lint_export(bad, "bad")}
    failed = {k for k, ok in results.items() if not ok}
    assert failed == {
        "lint isort",
        "lint black",
        "lint flake8",
        "lint end-of-file-fixer",
        "lint pretty-format-json",
        "lint check-added-large-files",
    }
    good = tmp_path / "good"
    (good / "scripts").mkdir(parents=True)
    good_code = '"""m"""\n\nimport os\nimport sys\n\n\ndef f(x=None):\n    return x, os, sys\n'
    (good / "scripts" / "m.py").write_text(good_code)
    (good / "configs").mkdir()
    (good / "configs" / "metadata.json").write_text(json.dumps({"a": [1, 2]}, indent=4) + "\n")
    (good / "docs.md").write_text("a final newline\n")
    (good / "weights.bin").write_bytes(b"\0" * (2 * 1024 * 1024))
    (good / "large_files.yml").write_text("large_files:\n- path: weights.bin\n  url: https://x/w.bin\n")
    results = lint_export(good, "good")
    assert [label for label, ok, _ in results if not ok] == []
    assert len(results) == 15  # isort, black, flake8 and the 12 hooks of the Zoo's config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model trained 2 epochs from the checkout, exported (with a large-file URL base) and zipped."""
    work = tmp_path_factory.mktemp("export")
    ensure_dataset(work / "data", **TINY_DATA)
    _bundle(
        ROOT,
        "run",
        "training",
        "--config_file",
        "configs/train.yaml",
        "--dataset_dir",
        str(work / "data"),
        "--output_dir",
        str(work / "stage1"),
        "--ckpt_dir",
        str(work / "models"),
        "--epochs",
        "2",
        "--delta_t",
        "1",
        *TINY_RUN,
    )
    result = export_bundle(str(work / "models" / "model.pt"), out=str(work / "dist"), large_file_url_base=URL)
    return work, result


def _formatted_checkout(dest: Path) -> Path:
    """A copy of the checkout after `python -m bundle.lint --fix` (what the lead runs once after merging)."""
    for d in ("configs", "scripts", "docs", "bundle", "tests"):
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "LICENSE", dest / "LICENSE")
    fix = subprocess.run([sys.executable, "-m", "bundle.lint", "--fix"], cwd=dest, capture_output=True, text=True)
    assert fix.returncode == 0, fix.stdout + fix.stderr  # nothing left for flake8 once formatted
    return dest


@pytest.mark.slow
def test_offline_checks_pass_on_the_export(exported):
    """Every check, the Zoo's lint and hooks included, on the export of the formatted checkout."""
    for tool in LINT_TOOLS:
        pytest.importorskip(tool)
    work, _ = exported
    source = _formatted_checkout(work / "formatted")
    result = export_bundle(
        str(work / "models" / "model.pt"), out=str(work / "dist_formatted"), source=str(source), large_file_url_base=URL
    )
    cmd = [sys.executable, "-m", "bundle.check", result["zip"], "--name", DEFAULT_NAME]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    labels = [
        "zip layout",
        "required files",
        "large files",
        "version in changelog",
        "logging config",
        "no source paths",
        "metadata schema",
        "verify_net_in_out",
        "ckpt_export TorchScript",
        "check_properties",
        "lint isort",
        "lint black",
        "lint flake8",
        "lint end-of-file-fixer",
        "lint check-added-large-files",
        "lint pretty-format-json",
    ]
    for label in labels:
        assert any(ln.startswith(f"PASS  {label}: ") for ln in lines), (label, run.stdout)
    assert "25/25 checks passed" in run.stdout and "FAIL" not in run.stdout
    assert "configs/inference.yaml alone" in run.stdout


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MODEL_ZOO_DIR"), reason="needs a model-zoo checkout: MODEL_ZOO_DIR=PATH")
def test_the_zoos_own_verify_bundle_passes_on_the_export(exported):
    """The fetched Zoo's ci/verify_bundle.py (full mode) on the zip, through bundle.zoo_verify."""
    _, result = exported
    cmd = [sys.executable, "-m", "bundle.zoo_verify", result["zip"], "--zoo", os.environ["MODEL_ZOO_DIR"]]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for line in (
        "directory is verified correctly.",
        "version and changelog are verified correctly.",
        "metadata format is verified correctly.",
        "data shape is verified correctly.",
        "export weights into TorchScript module successfully.",
        "Model Zoo premerge checks: PASS",
    ):
        assert line in run.stdout, line


@pytest.fixture(scope="module")
def unpacked(exported, tmp_path_factory):
    """The zip unpacked in an empty folder, away from the checkout: its inference, a 2-epoch stage 1
    tracked to a local MLflow store, and its pruning, each run from inside the unpacked bundle."""
    work, result = exported
    here = tmp_path_factory.mktemp("user")
    bundle = unpack(result["zip"], here)
    shutil.rmtree(work / "stage1")  # nothing of the checkout's run is left to lean on
    data = str(work / "data")
    train = ["--config_file", "configs/train.yaml", "--dataset_dir", data, *TINY_RUN]
    store = here / "mlflow" / "mlruns.db"
    # the Zoo's form: configs/inference.yaml alone
    _bundle(
        bundle,
        "run",
        "--config_file",
        "configs/inference.yaml",
        "--dataset_dir",
        data,
        "--output_dir",
        str(here / "pred"),
        "--patch_size",
        "[16,16,16]",
        "--num_workers",
        "0",
    )
    trained = _bundle(
        bundle,
        "run",
        "training",
        *train,
        "--epochs",
        "2",
        "--delta_t",
        "1",
        "--tracking",
        "mlflow",
        "--tracking_uri",
        f"sqlite:///{store}",
        "--tensorboard",
        "True",
    )
    _bundle(bundle, "run", "pruning", "--config_file", "configs/prune.yaml", "--prune_rate", "0.5", "--report", "False")
    return bundle, here, store, data, trained.stdout


@pytest.mark.slow
def test_unpacked_export_infers_trains_and_prunes(unpacked):
    bundle, here, _, data, console = unpacked
    test = load_decathlon_datalist(Path(data) / "dataset.json", data_list_key="test")
    for entry in test:  # one mask per test image, on its grid, with the exported weights
        mask = nib.load(here / "pred" / f"{entry['case_id']}_seg.nii.gz")
        image = nib.load(entry["image"])
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    # stage 1 wrote into the unpacked bundle's default places (bundle_root '.')
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "checkpoint_final.pt").is_file()
    table = read_dynamics(bundle / "runs" / "stage1" / "dynamics.csv")
    for epoch in (1, 2):  # stage 1's console: the epoch, its loss and the mean DAD
        assert re.search(rf"DADTracker - INFO - epoch {epoch}/2: loss \d\.\d{{4}}, mean DAD \d\.\d{{4}}", console)
    assert sorted(set(table["epoch"].astype(int))) == [1, 2] and len(set(table["case_id"])) == 4
    summary = json.loads((bundle / "runs" / "prune" / "prune_summary.json").read_text())
    assert summary["num_cases"] == 4 and summary["num_kept"] == 2
    assert len(load_decathlon_datalist(bundle / "runs" / "prune" / "subset_datalist.json")) == 2


@pytest.mark.slow
def test_mlflow_tracking_writes_the_run(unpacked):
    mlflow = pytest.importorskip("mlflow")
    _, _, store, _, _ = unpacked
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    runs = client.search_runs([experiments["monai_experiment"]])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    for metric in ("train_loss", "val_mean_dice", "mean_dad"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert history and all(np.isfinite(m.value) for m in history), metric
    assert [m.step for m in client.get_metric_history(run.info.run_id, "mean_dad")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mean_dice")] == [1, 2]
    params = run.data.params
    assert params["epochs"] == "2" and params["num_train_cases"] == "4" and params["delta_t"] == "1"
    assert params["dad_mode"] == "patches" and params["patch_size"] == "[16, 16, 16]"
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id, "dad")}
    names = ("dynamics.csv", "moving_distance.csv", "stop_rule.json", "data_map_stage1.png")
    assert artefacts == {f"dad/{n}" for n in names}
    local = Path(client.download_artifacts(run.info.run_id, "dad/dynamics.csv"))
    assert local.read_text().startswith("epoch,case_id,center")


@pytest.mark.slow
def test_tensorboard_logs_the_run(unpacked):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    bundle = unpacked[0]
    tags = {}
    for events in sorted((bundle / "runs" / "stage1" / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags.update({t: accumulator.Scalars(t) for t in accumulator.Tags()["scalars"]})
    assert {"train_loss", "val_mean_dice"} <= set(tags)
    assert [e.step for e in tags["val_mean_dice"]] == [1, 2]
