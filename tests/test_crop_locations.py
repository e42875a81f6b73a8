"""The crop's foreground / background locations computed once per case (scripts/data/transforms.py,
CropIndicesd): all of them, and the same crops for the same seed, up to the bound; beyond it a bounded,
seeded, uniform sample of the right voxels (checked against numpy's own indices)."""

import numpy as np
import torch
from monai.transforms import RandCropByPosNegLabeld
from scripts.data.transforms import CropIndicesd, sample_locations


def _crop(**keys) -> RandCropByPosNegLabeld:
    return RandCropByPosNegLabeld(keys=["image", "label"], label_key="label", spatial_size=[6, 6, 6], pos=1, neg=1,
                                  num_samples=3, **keys)  # fmt: skip


def _case(rng: np.random.Generator, shape=(20, 18, 16)) -> dict:
    label = np.zeros((1, *shape), np.float32)
    label[0, 4:11, 6:13, 3:9] = 1.0
    label[0, 15:17, 2:4, 10:12] = 2.0  # a second class counts as foreground too
    return {"image": torch.as_tensor(rng.normal(size=(1, *shape)).astype(np.float32)), "label": torch.as_tensor(label)}


def test_crop_locations_are_the_crops_own_and_the_crops_unchanged():
    rng = np.random.default_rng(0)
    case = _case(rng)
    crop = _crop(fg_indices_key="fg", bg_indices_key="bg")
    out = CropIndicesd(crop)(case)
    flat = case["label"].numpy().reshape(-1)
    np.testing.assert_array_equal(out["fg"], np.flatnonzero(flat > 0))  # every location, as numpy finds them
    np.testing.assert_array_equal(out["bg"], np.flatnonzero(flat == 0))
    plain = _crop()  # finds its own locations at every call, as before
    crop.set_random_state(7)
    plain.set_random_state(7)
    for _ in range(5):
        ours, theirs = crop(dict(out)), plain(dict(case))
        for a, b in zip(ours, theirs):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert "fg" not in ours[0] and "bg" not in ours[0]  # taken by the crop, not carried into the batch


def test_crop_locations_beyond_the_bound_are_a_bounded_sample_of_the_right_voxels():
    rng = np.random.default_rng(1)
    case = _case(rng)
    image = case["image"].numpy().reshape(-1)
    crop = _crop(fg_indices_key="fg", bg_indices_key="bg", image_key="image", image_threshold=0.5)
    out = CropIndicesd(crop, max_samples=100)(case)
    label = case["label"].numpy().reshape(-1)
    fg, bg = out["fg"], out["bg"]
    assert len(fg) == 100 and len(np.unique(fg)) == 100 and (label[fg] > 0).all()
    # the crop's rule with an image_key: background only where the image is above its threshold
    assert len(bg) == 100 and len(np.unique(bg)) == 100 and (label[bg] == 0).all() and (image[bg] > 0.5).all()
    assert (np.count_nonzero(label > 0), np.count_nonzero((label == 0) & (image > 0.5))) > (100, 100)
    again = CropIndicesd(crop, max_samples=100)(case)
    np.testing.assert_array_equal(again["fg"], fg)  # seeded: the same data gives the same sample


def test_sample_locations_spans_the_volume_chunk_by_chunk(monkeypatch):
    import scripts.data.transforms as transforms

    monkeypatch.setattr(transforms, "CHUNK", 1000)  # many chunks on a small mask
    mask = np.random.default_rng(2).random(50_000) < 0.4
    picked = sample_locations(mask, max_samples=5000, seed=3)
    truth = np.flatnonzero(mask)
    assert len(picked) == 5000 and np.isin(picked, truth).all() and (np.diff(picked) > 0).all()
    # a uniform sample: about as many in each half of the True voxels
    assert abs(np.count_nonzero(picked < truth[len(truth) // 2]) - 2500) < 250


def test_a_crop_without_location_keys_gets_none():
    case = _case(np.random.default_rng(3))
    assert set(CropIndicesd(_crop())(case)) == {"image", "label"}
    assert set(CropIndicesd(object())(case)) == {"image", "label"}
