"""The review (issue 17, item 3): outlines drawn from the label and from the prediction, the slices where
they disagree, the suspected-problem rules on hand-made masks, review.csv, and verdicts fed back as a new
data list."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet
from scripts.data.plan import intensity_transforms, spacing_transforms, write_plan
from scripts.report.review import disagreement_slices, outline, plot_review, suspected_problem
from scripts.workflows.review import apply_review, make_review, read_verdicts


def _square_outline(x0, x1, y0, y1):
    """The outline pixels of the rectangle [x0, x1) x [y0, y1), worked out by hand, sorted."""
    pts = {(x, y) for x in range(x0, x1) for y in (y0, y1 - 1)} | {(x, y) for x in (x0, x1 - 1) for y in range(y0, y1)}
    return sorted(pts)


def test_outline_of_a_rectangle_is_its_border():
    mask = np.zeros((10, 10), bool)
    mask[2:7, 3:8] = True
    assert sorted(map(tuple, outline(mask).tolist())) == _square_outline(2, 7, 3, 8)
    assert len(outline(mask)) == 16 and len(outline(np.zeros((4, 4), bool))) == 0


def test_figure_outlines_come_from_the_label_and_from_the_shifted_prediction(tmp_path):
    label = np.zeros((20, 20, 8), np.int64)
    label[4:10, 5:11, 3] = 1  # one slice of class 1 and, on another, class 2 that the model agrees with
    label[12:16, 12:16, 6] = 2
    pred = np.zeros_like(label)
    pred[7:13, 5:11, 3] = 1  # the prediction: the label's square moved by +3 along x
    pred[12:16, 12:16, 6] = 2
    assert disagreement_slices(label, pred) == [3]
    image = np.random.default_rng(0).normal(size=label.shape).astype(np.float32)
    drawn = plot_review(image, label, pred, 3, "test case", tmp_path / "case.png", slices=[3, 6])
    assert (tmp_path / "case.png").stat().st_size > 1000
    assert sorted(map(tuple, drawn[("label", 1, 3)].tolist())) == _square_outline(4, 10, 5, 11)
    assert sorted(map(tuple, drawn[("prediction", 1, 3)].tolist())) == _square_outline(7, 13, 5, 11)
    assert sorted(map(tuple, drawn[("label", 2, 6)].tolist())) == _square_outline(12, 16, 12, 16)
    assert (drawn[("prediction", 2, 6)] == drawn[("label", 2, 6)]).all()  # class 2 agrees
    assert len(drawn[("label", 2, 3)]) == 0 and len(drawn[("prediction", 1, 6)]) == 0


def _cube(lo, hi, shape=(20, 20, 20)):
    m = np.zeros(shape, np.int64)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return m


def test_suspected_problem_rules_on_hand_made_masks():
    label = _cube((5, 5, 5), (11, 11, 11))  # 216 voxels, centroid (7.5, 7.5, 7.5)
    empty = np.zeros_like(label)
    assert suspected_problem(label, label, 2) == ""
    assert suspected_problem(empty, empty, 2) == ""
    # moved by 3 voxels: Dice 0.5, same volume, centroids 3 > 0.3 x 6 apart
    assert suspected_problem(label, _cube((8, 5, 5), (14, 11, 11)), 2) == "shift"
    assert suspected_problem(empty, label, 2) == "missing structure"  # the model finds what the label lacks
    assert suspected_problem(label, empty, 2) == "extra structure"
    # a 8x6x4 box around the same centroid: Dice 288/408 = 0.71, volume 192/216
    assert suspected_problem(label, _cube((4, 5, 6), (12, 11, 10)), 2) == "boundary"
    two = label + 2 * _cube((14, 14, 14), (18, 18, 18))  # class 2 where the model puts it 2 voxels over
    pred = label + 2 * _cube((16, 14, 14), (20, 18, 18))
    assert suspected_problem(two, pred, 3) == "class 2: shift"


def _dataset(tmp_path):
    from scripts.data.synthetic import generate_dataset

    return generate_dataset(tmp_path / "data", 4, 1, 1, 2, (32, 32, 32), 0.0)


def test_verdicts_make_a_new_data_list_without_the_rejected_cases(tmp_path):
    dataset = _dataset(tmp_path)
    before = dataset.read_bytes()
    content = json.loads(before)
    ids = [Path(d["image"]).name.removesuffix(".nii.gz") for d in content["training"] + content["validation"]]
    sheet = tmp_path / "review.csv"
    verdicts = {ids[0]: "wrong", ids[1]: "OK", ids[2]: "", ids[4]: "x"}  # ids[4]: the validation case
    sheet.write_text("rank,case_id,verdict\n" + "".join(f"{i},{c},{v}\n" for i, (c, v) in enumerate(verdicts.items())))
    new = Path(apply_review(str(sheet), str(dataset), str(tmp_path / "reviewed.json")))
    out = json.loads(new.read_text())
    assert [d["case_id"] for d in out["training"]] == [ids[1], ids[2], ids[3]] and out["numTraining"] == 3
    assert out["validation"] == [] and out["review"]["excluded"] == sorted([ids[0], ids[4]])
    assert all(Path(d["image"]).is_absolute() for d in out["training"])
    assert dataset.read_bytes() == before  # the user's file is never written
    with pytest.raises(ValueError, match="NEW data list"):
        apply_review(str(sheet), str(dataset), str(dataset))
    sheet.write_text(f"case_id,verdict\n{ids[0]},maybe\n")
    with pytest.raises(ValueError, match=f"case {ids[0]}: verdict 'maybe'"):
        read_verdicts(sheet)


def test_make_review_draws_the_top_cases_with_the_model_that_scored_them(tmp_path):
    dataset = _dataset(tmp_path)
    content = json.loads(dataset.read_text())
    entries = [{**d, "image": str(tmp_path / "data" / d["image"]), "label": str(tmp_path / "data" / d["label"]),
                "case_id": Path(d["image"]).name.removesuffix(".nii.gz")} for d in content["training"]]  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "scored_datalist.json").write_text(json.dumps({"training": entries}))
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1, norm="batch")
    torch.save(net.state_dict(), tmp_path / "model.pt")
    # its training's plan beside it (the embedded set's: no resampling or padding, a z-score per image)
    plan = {"spacing": {"resample": False}, "padding": {"pad_to_patch": False}, "normalization": {"kind": "zscore"}}
    write_plan(tmp_path / "train", plan, 2, spacing_transforms(plan), intensity_transforms(plan), tmp_path)
    header = "rank,case_id,center,list,fold,model,model_epochs,ranked_by,dad,el2n,cleanlab,monai_lq,rank_average\n"
    lines = [f"{r},{e['case_id']},c,training,{r % 2},fold{r % 2}:{tmp_path / 'model.pt'},5,dad,0.{r},0.5,0.4,0.3,0.2\n"
             for r, e in enumerate(entries, start=1)]  # fmt: skip
    (run / "ranking.csv").write_text(header + "".join(lines))
    sheet = make_review(str(run), top=2, patch_size=[16, 16, 16])
    with sheet.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == [entries[0]["case_id"], entries[1]["case_id"]]
    assert all(r["verdict"] == "" and Path(r["figure"]).is_file() for r in rows)
    assert rows[0]["model"].endswith("model.pt") and rows[0]["model_epochs"] == "5"
