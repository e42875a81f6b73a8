"""The plan travels with the model (issue 25, item 1): a training writes plan.json beside its checkpoints,
and evaluation, scoring (so the audit's folds), review, inference and the Zoo export apply it; a preset or
plan that disagrees with it is refused in one line naming both. The data: 8 CT cases of 16^3 at z spacings
chosen by hand so that the audit's held-out fold plans otherwise than its training folds (the issue's case)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from scripts.data.folds import assign_folds, fold_datalists
from scripts.data.lists import labelled_cases
from scripts.experiments.plan_rules import ct_dataset
from scripts.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
# case i at 1 x 1 x Z[i] mm; assign_folds(8 cases, 2, seed 0) holds out cases 1, 2, 4, 5 in fold 0:
# held out z 2.0, 2.5, 2.5, 3.0 (median 2.5), trained on z 1.5, 3.0, 3.5, 4.0 (median 3.25)
Z = [1.5, 2.0, 2.5, 3.0, 2.5, 3.0, 3.5, 4.0]
TINY = {"num_workers": 0, "patch_size": [16, 16, 16], "epochs": 1, "delta_t": 1, "val_interval": 1}


def _cause(err: BaseException, kind: type) -> BaseException | None:
    """The first exception of ``kind`` in a chain (MONAI's parser wraps what an expression raises)."""
    while err is not None:
        if isinstance(err, kind):
            return err
        err = err.__cause__ or err.__context__
    return None


@pytest.fixture(scope="module")
def fold0(tmp_path_factory):
    """The audit's fold 0 of the 8 CT cases: its lists, and its training initialized (no epoch trained):
    plan.json in ckpt_dir, beside an untrained checkpoint of that network."""
    root = tmp_path_factory.mktemp("ct")
    dataset = ct_dataset(root / "data", [(1.0, 1.0, z) for z in Z], num_train=8)
    cases = labelled_cases(dataset, ["training"])
    folds = assign_folds([c["case_id"] for c in cases], 2, 0)
    assert folds.tolist() == [1, 0, 0, 1, 0, 0, 1, 1]
    train, held = fold_datalists(cases, folds, 0, name="data", meta=json.loads(dataset.read_text()))
    fold = root / "fold0"
    fold.mkdir()
    (fold / "datalist.json").write_text(json.dumps(train))
    (fold / "heldout.json").write_text(json.dumps(held))
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"), workflow_type="train", dataset_json=str(fold / "datalist.json"),
        output_dir=str(fold / "train"), ckpt_dir=str(fold / "models"), early_prune=False, test_fraction=0, **TINY,
    )  # fmt: skip
    workflow.initialize()
    (fold / "models").mkdir(exist_ok=True)
    torch.save(workflow.parser.get_parsed_content("network").state_dict(), fold / "models" / "checkpoint_final.pt")
    return fold


def _spacing_and_clip(parser: ConfigParser) -> tuple[list[float], list[float]]:
    (spacing,) = [t for t in parser.get_parsed_content("spacing_transforms") if type(t).__name__ == "Spacingd"]
    (scale,) = parser.get_parsed_content("intensity_transforms")
    clip = [float(scale.scaler.a_min), float(scale.scaler.a_max)]
    return [float(v) for v in spacing.spacing_transform.pixdim], clip


def _consumer(files, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    for k, v in {"num_workers": 0, "patch_size": [16, 16, 16], **overrides}.items():
        parser[k] = v
    return parser


def test_the_training_writes_its_plan_beside_its_checkpoints(fold0):
    beside = json.loads((fold0 / "models" / "plan.json").read_text())
    assert beside == json.loads((fold0 / "train" / "plan.json").read_text())
    # the fold's training cases only (z 1.5, 3.0, 3.5, 4.0): median 3.25, not the 2.75 of all 8
    assert beside["plan"]["spacing"]["target"] == [1.0, 1.0, 3.25]
    assert beside["used"]["spacing_transforms"][0] == {"transform": "Spacingd", "pixdim": [1.0, 1.0, 3.25]}


@pytest.mark.parametrize("consumer", ["scoring.yaml", "evaluate.yaml"])
def test_a_held_out_fold_is_preprocessed_with_the_plan_its_fold_model_trained_with(fold0, consumer):
    """The audit's scoring command (and an evaluation) of fold 0's held-out cases with fold 0's model: the
    held-out list alone would plan z 2.5 and another clip; the model's plan says 3.25 and its clip (on
    70fc76e: 2.5 here against the training's 2.75, which also read the held-out cases as its validation)."""
    trained = json.loads((fold0 / "train" / "plan.json").read_text())["plan"]  # what the fold's training used
    checkpoint = str(fold0 / "models" / "checkpoint_final.pt")
    parser = _consumer(["train.yaml", consumer], dataset_json=str(fold0 / "heldout.json"), checkpoint=checkpoint,
                       output_dir=str(fold0 / "scoring"))  # fmt: skip
    pixdim, clip = _spacing_and_clip(parser)
    assert pixdim == trained["spacing"]["target"]
    np.testing.assert_allclose(clip, trained["normalization"]["clip"])
    assert parser.get_parsed_content("num_classes") == 2
    # what the held-out list alone plans (0.6 behaviour) is indeed another preprocessing
    alone = _consumer(["train.yaml"], dataset_json=str(fold0 / "heldout.json"), output_dir=str(fold0 / "x"))
    assert _spacing_and_clip(alone)[0] == [1.0, 1.0, 2.5]


def test_a_preset_or_override_that_disagrees_with_the_checkpoints_plan_is_refused(fold0):
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "scoring.yaml")], workflow_type="train",
        dataset_json=str(fold0 / "heldout.json"), checkpoint=str(fold0 / "models" / "checkpoint_final.pt"),
        output_dir=str(fold0 / "refused"), num_workers=0, patch_size=[16, 16, 16],
        spacing_transforms=[{"_target_": "Spacingd", "keys": ["image", "label"], "pixdim": [1.0, 1.0, 1.0]}],
    )  # fmt: skip
    with pytest.raises(Exception) as err:
        workflow.initialize()
    refused = _cause(err.value, InputError)
    assert refused is not None, err.value
    text = str(refused)
    assert "\n" not in text and str(fold0 / "models" / "plan.json") in text
    assert "pixdim=[1.0, 1.0, 3.25]" in text and "pixdim=[1.0, 1.0, 1.0]" in text
    assert "a preset or --key override" in text and "fix: drop the preset" in text
    assert not (fold0 / "refused").exists()  # refused before anything is written


def test_inference_applies_the_plan_beside_the_checkpoint_and_refuses_another(fold0, tmp_path):
    from scripts.data.model_plan import check_applies

    def infer(**overrides):
        return _consumer(["inference.yaml"], bundle_root=str(ROOT), ckpt_dir=str(fold0 / "models"),
                         checkpoint=str(fold0 / "models" / "checkpoint_final.pt"), **overrides)  # fmt: skip

    parser = infer()
    assert _spacing_and_clip(parser)[0] == [1.0, 1.0, 3.25]  # no --plan_json needed
    # another run's plan: refused, naming both files
    other = tmp_path / "other"
    other.mkdir()
    plan = json.loads((fold0 / "models" / "plan.json").read_text())
    plan["plan"]["spacing"]["target"] = [1.0, 1.0, 2.5]
    plan["used"]["spacing_transforms"][0]["pixdim"] = [1.0, 1.0, 2.5]
    (other / "plan.json").write_text(json.dumps(plan))
    parser = infer(plan_json=str(other / "plan.json"))
    assert _spacing_and_clip(parser)[0] == [1.0, 1.0, 2.5]
    keys = ("checkpoint", "num_classes", "spacing_transforms", "intensity_transforms", "plan_json")
    parsed = {k: parser.get_parsed_content(k) for k in keys}
    with pytest.raises(InputError) as err:
        check_applies(*parsed.values(), "plan_json")
    text = str(err.value)
    assert str(fold0 / "models" / "plan.json") in text and f"--plan_json {other / 'plan.json'}" in text
    assert "fix: drop --plan_json" in text and "\n" not in text


def test_inference_without_a_plan_beside_the_checkpoint_keeps_the_embedded_sets(tmp_path):
    parser = _consumer(["inference.yaml"], bundle_root=str(ROOT), ckpt_dir=str(tmp_path / "models"))
    assert parser.get_parsed_content("plan_json") is None
    assert parser.get_parsed_content("num_classes") == 2 and parser.get_parsed_content("spacing_transforms") == []


def _three_class_scoring_run(root: Path) -> tuple[Path, Path]:
    """A scoring run's folder (run.json, scored_datalist.json, ranking.csv) whose model has 3 classes and
    a plan of its own (z 3.25 for 16^3 CT cases), trained on a list other than the default data set."""
    import nibabel as nib

    dataset = ct_dataset(root / "data", [(1.0, 1.0, z) for z in Z[:4]], num_train=4)
    content = json.loads(dataset.read_text())
    for d in content["training"]:  # a second class: the upper half of each target
        path = dataset.parent / d["label"]
        img = nib.load(path)
        label = np.asarray(img.dataobj).copy()
        label[:, 8:, :][label[:, 8:, :] > 0] = 2
        nib.save(nib.Nifti1Image(label, img.affine, img.header), path)
    content["labels"] = {"0": "background", "1": "lower", "2": "upper"}
    dataset.write_text(json.dumps(content))
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.yaml"), workflow_type="train", dataset_json=str(dataset),
        output_dir=str(root / "train"), ckpt_dir=str(root / "models"), test_fraction=0, val_fraction=0.25, **TINY,
    )  # fmt: skip
    workflow.initialize()
    model = root / "models" / "model.pt"
    model.parent.mkdir(exist_ok=True)
    torch.save(workflow.parser.get_parsed_content("network").state_dict(), model)
    run = root / "scoring"
    run.mkdir()
    cases = [{**c, "list": "training"} for c in labelled_cases(dataset, ["training"])]
    (run / "scored_datalist.json").write_text(json.dumps({"training": cases}))
    (run / "run.json").write_text(json.dumps({"source_datalist": str(dataset), "num_classes": 3}))
    header = "rank,case_id,center,list,fold,model,model_epochs,ranked_by,dad,el2n,cleanlab,monai_lq,rank_average\n"
    rows = [f"{r},{c['case_id']},c,training,,{model},1,dad,0.{r},0.5,0.4,0.3,0.2\n" for r, c in enumerate(cases, 1)]
    (run / "ranking.csv").write_text(header + "".join(rows))
    return run, model


def test_review_of_a_scoring_run_uses_its_models_plan_and_generates_nothing(tmp_path, monkeypatch):
    """Before: the network and preprocessing of the default embedded set (generated in the working
    directory), and a PyTorch size mismatch on a 3-class model."""
    import csv

    from scripts.workflows import review

    run, model = _three_class_scoring_run(tmp_path / "src")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    seen = []
    original = review._bundle_parts

    def spy(*args, **kwargs):
        parts = original(*args, **kwargs)
        seen.append(parts)
        return parts

    monkeypatch.setattr(review, "_bundle_parts", spy)
    sheet = review.make_review(str(run), top=2, patch_size=[16, 16, 16])
    with sheet.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(Path(r["figure"]).is_file() for r in rows)
    assert list(cwd.iterdir()) == []  # nothing generated where the user stands
    (parts,) = seen
    assert parts["num_classes"] == 3 and parts["network"].out_channels == 3
    (spacing,) = [t for t in parts["preprocessing"].transforms if type(t).__name__ == "Spacingd"]
    planned = json.loads((model.parent / "plan.json").read_text())["plan"]["spacing"]["target"]
    assert [float(v) for v in spacing.spacing_transform.pixdim] == planned
    assert planned[2] in (2.0, 2.5)  # the median z of 3 of the cases at 1.5, 2, 2.5, 3 (one carved for validation)


def test_review_refuses_settings_that_disagree_with_the_model_in_one_line(tmp_path):
    from scripts.workflows.review import make_review

    run, _ = _three_class_scoring_run(tmp_path)
    with pytest.raises(InputError, match=r"was trained for 3 classes .* this config has 2") as err:
        make_review(str(run), top=1, patch_size=[16, 16, 16], num_classes=2)  # was: a PyTorch size mismatch
    assert "\n" not in str(err.value)
    spacing = [{"_target_": "Spacingd", "keys": ["image", "label"], "pixdim": [1.0, 1.0, 1.0]}]
    disagree = r"trained with spacing_transforms Spacingd\(pixdim=\[1.0, 1.0, 2.*this run has Spacingd\(pixdim=\[1.0, 1"
    with pytest.raises(InputError, match=disagree):
        make_review(str(run), top=1, patch_size=[16, 16, 16], spacing_transforms=spacing)


def test_the_zoo_export_carries_the_plan_of_the_model_it_exports(fold0, tmp_path):
    from bundle.export import export_bundle

    result = export_bundle(str(fold0 / "models" / "checkpoint_final.pt"), out=str(tmp_path / "dist"))
    bundle = Path(result["bundle_dir"])
    text = (bundle / "models" / "plan.json").read_text()
    exported = json.loads(text)
    assert text == json.dumps(exported, indent=4) + "\n"  # the Zoo's pretty-format-json (indent 4)
    assert str(fold0) not in text  # no source path leaks into the bundle
    assert exported["used"] == json.loads((fold0 / "models" / "plan.json").read_text())["used"]
    parser = _consumer(["inference.yaml"], bundle_root=str(bundle))  # the exported inference.yaml, alone
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    parser["bundle_root"], parser["patch_size"] = str(bundle), [16, 16, 16]
    assert _spacing_and_clip(parser)[0] == [1.0, 1.0, 3.25]


def test_the_export_refuses_a_model_whose_preset_inference_yaml_alone_cannot_rebuild(fold0, tmp_path):
    from bundle.export import export_bundle

    models = tmp_path / "models"
    models.mkdir()
    torch.save(torch.load(fold0 / "models" / "checkpoint_final.pt"), models / "model.pt")
    plan = json.loads((fold0 / "models" / "plan.json").read_text())
    plan["used"]["spacing_transforms"] = [{"transform": "Spacingd", "pixdim": [1.0, 1.0, 1.0]}]  # a preset won
    (models / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(InputError, match="configs/inference.yaml alone, which rebuilds a plan but not a preset"):
        export_bundle(str(models / "model.pt"), out=str(tmp_path / "dist"))
    assert not (tmp_path / "dist" / "dad_pruning_segmentation").exists()


def test_a_retraining_on_an_exported_subset_plans_as_its_stage_1(fold0, tmp_path):
    """The subset points back to stage 1's split data list; the retraining's plan (the one its own
    checkpoints carry) is stage 1's, made from the same training cases."""
    stage1 = json.loads((fold0 / "train" / "plan.json").read_text())
    split = fold0 / "train" / "datalist_split.json"
    source = split if split.is_file() else fold0 / "datalist.json"
    content = json.loads(source.read_text())
    subset = {**content, "training": content["training"][:2], "pruning": {"source_datalist": str(source)}}
    (tmp_path / "subset_datalist.json").write_text(json.dumps(subset))
    parser = _consumer(["train.yaml"], dataset_json=str(tmp_path / "subset_datalist.json"),
                       output_dir=str(tmp_path / "retrain"), test_fraction=0)  # fmt: skip
    assert parser.get_parsed_content("plan")["spacing"] == stage1["plan"]["spacing"]
    assert parser.get_parsed_content("plan")["normalization"] == stage1["plan"]["normalization"]


def test_a_checkpoint_without_a_plan_is_used_with_a_warning(tmp_path, caplog):
    from scripts.data.model_plan import check_applies

    (tmp_path / "model.pt").write_bytes(b"")
    with caplog.at_level("WARNING", logger="plan"):
        assert check_applies(tmp_path / "model.pt", 2, [], []) == str(tmp_path / "model.pt")
    assert "has no plan.json beside it" in caplog.text and os.fspath(tmp_path / "model.pt") in caplog.text
