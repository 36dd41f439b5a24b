"""The papers' views against a per-sample reference: torchvision's documented box rules, then PIL's crop+resize."""

import math

import numpy as np
import pytest
import torch

from robustft.data import iterate_batches
from robustft.data.packed import PackedDataset, PackedImages
from robustft.data.views import View, center_crop_boxes, random_crop_boxes, random_resized_crop_boxes
from support import pil_crop_resize, smooth_images

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def _rrc_reference(height: int, width: int, areas: list[float], ratios: list[float], offsets: list[float]
                   ) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, written per sample with the draws given as uniforms."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for u, v in zip(areas, ratios):
        target_area = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * u)
        aspect_ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * v)
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(offsets[0] * (height - h + 1)), int(offsets[1] * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        h, w = height, int(round(height * max(RATIO)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


SIZES = [(256, 341), (341, 256), (256, 256), (256, 1200), (900, 256), (256, 300), (60, 40), (256, 470)]


def test_random_resized_crop_boxes_follow_torchvision_rule_including_the_fallback():
    sizes = torch.tensor(SIZES * 50)
    boxes = random_resized_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the documented draw order: areas N×10, ratios N×10, offsets N×2
    areas = torch.rand(len(sizes), 10, generator=g, dtype=torch.float64)
    ratios = torch.rand(len(sizes), 10, generator=g, dtype=torch.float64)
    offsets = torch.rand(len(sizes), 2, generator=g, dtype=torch.float64)
    expected = [_rrc_reference(h, w, areas[i].tolist(), ratios[i].tolist(), offsets[i].tolist())
                for i, (h, w) in enumerate(sizes.tolist())]
    assert boxes.tolist() == [list(b) for b in expected]
    # The extreme shapes (1200x256, 256x900) take the centre-crop fallback at least sometimes.
    whole_height = [b for b, (h, w) in zip(expected, sizes.tolist()) if (h, w) == (256, 1200)]
    assert any(b == (0, (1200 - 341) // 2, 256, 341) for b in whole_height)


def test_random_and_center_crop_boxes_follow_torchvision_rules():
    sizes = torch.tensor(SIZES[:6])
    g = torch.Generator().manual_seed(1)
    offsets = torch.rand(len(sizes), 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = [[int(offsets[i, 0] * (h - 224 + 1)), int(offsets[i, 1] * (w - 224 + 1)), 224, 224]
                for i, (h, w) in enumerate(sizes.tolist())]
    assert random_crop_boxes(sizes, 224, g).tolist() == expected
    assert center_crop_boxes(sizes, 224).tolist() == [[int(round((h - 224) / 2)), int(round((w - 224) / 2)), 224, 224]
                                                      for h, w in sizes.tolist()]


@pytest.mark.parametrize("kind", ["random_resized_crop", "random_crop", "center_crop"])
def test_view_pixels_match_pil_crop_then_resize_within_one_grey_level(kind):
    sizes = SIZES[:6]
    arrays = smooth_images(sizes)
    packed = PackedImages.pack([torch.from_numpy(a) for a in arrays])
    view = View(kind, 224, hflip=True)
    out = view(packed.pixels, packed.offsets, packed.sizes, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    boxes = view.boxes(packed.sizes, g)
    flips = torch.rand(len(sizes), generator=g) < 0.5
    assert out.shape == (len(sizes), 3, 224, 224) and out.dtype == torch.uint8
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = pil_crop_resize(arrays[i], (top, left, h, w), 224)
        ref = ref[:, ::-1] if flips[i] else ref
        diff = np.abs(out[i].permute(1, 2, 0).numpy().astype(np.int64) - ref)
        assert diff.max() <= 1, f"sample {i} box {(top, left, h, w)}: off by {diff.max()}"
        if (h, w) == (224, 224):
            assert diff.max() == 0  # a plain crop is copied exactly
    assert 0 < flips.sum() < len(sizes)


def test_packed_dataset_serves_the_same_views_after_subset_and_render():
    arrays = smooth_images([(40, 50), (30, 30), (36, 60), (32, 33)])
    data = PackedDataset(PackedImages.pack([torch.from_numpy(a) for a in arrays]), torch.arange(4), ["a"] * 4,
                         "toy", size=28)
    rendered = data.render()
    assert rendered.x.shape == (4, 3, 28, 28)
    for i, a in enumerate(arrays):
        top, left = round((a.shape[0] - 28) / 2), round((a.shape[1] - 28) / 2)
        assert torch.equal(rendered.x[i], torch.from_numpy(a[top:top + 28, left:left + 28]).permute(2, 0, 1))
    sub = data.subset([2, 0])
    assert torch.equal(sub.render().x, rendered.x[[2, 0]]) and sub.y.tolist() == [2, 0]
    assert torch.equal(sub.images.compact().image(0), torch.from_numpy(arrays[2]))


def test_packed_batches_resume_mid_epoch_bit_identically_and_do_not_depend_on_the_device_of_the_draws():
    arrays = smooth_images([(40, 50), (30, 30), (36, 60), (32, 33)] * 5, seed=2)
    data = PackedDataset(PackedImages.pack([torch.from_numpy(a) for a in arrays]), torch.arange(20), ["a"] * 20,
                         "toy", size=28)
    view = View("random_resized_crop", 28, hflip=True)
    full = list(iterate_batches(data, 6, shuffle=True, generator=torch.Generator().manual_seed(0), augment=view))
    tail = list(iterate_batches(data, 6, shuffle=True, generator=torch.Generator().manual_seed(0), augment=view,
                                start=2))
    assert len(full) == 4 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[2:], tail))
    assert full[0][0].shape == (6, 3, 28, 28) and full[0][0].dtype == torch.float32
    again = list(iterate_batches(data, 6, shuffle=True, generator=torch.Generator().manual_seed(1), augment=view))
    assert not torch.equal(full[0][0], again[0][0])
    # without a view, batches are the centre crops (the evaluation view), in order
    x, y = next(iterate_batches(data, 20))
    assert torch.equal(x, data.render().x.float() / 255) and torch.equal(y, torch.arange(20))


def test_load_splits_decodes_the_training_data_once_for_train_and_val(tmp_path, make_tree, monkeypatch):
    from robustft.data import imagefolder, load_splits
    make_tree(tmp_path / "d", {"train": {"a": 6, "b": 6}, "test": {"a": 2, "b": 2}}, size=40)
    calls = []
    decode = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode", lambda tree, files, *a: calls.append(len(files)) or decode(tree, files, *a))
    splits = load_splits(tmp_path / "d", {"train": None, "val": None}, val_fraction=0.25, cache=False,
                         image_size=32, storage_size=36)
    assert calls == [12]
    assert isinstance(splits["train"], PackedDataset) and len(splits["train"]) + len(splits["val"]) == 12
    assert splits["val"].images.sizes.tolist() == [[36, 36]] * 4  # stored with the shorter side at storage_size
