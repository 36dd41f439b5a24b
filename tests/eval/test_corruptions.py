"""Corruption suite: deterministic, shape/dtype/range kept, severity 0 = identity, severity grows the distortion, the
exact ones match their reference formulas; corruption accuracy and the `robustft evaluate --corruptions` record."""

import json

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from robustft.data import ArrayDataset
from robustft.errors import UserError
from robustft.eval import CORRUPTIONS, corrupt, corrupt_dataset, evaluate_corruptions
from robustft.eval.corruption_eval import parse_corruptions, parse_severities
from robustft.eval.corruptions import CIFAR_C_BENCHMARK, CIFAR_C_EXTRA, _frost_texture
from robustft.eval.image_ops import canny, equalize_hist, hsv_to_rgb, rgb_to_hsv
from robustft.models import create_model, save_state_dict
from support import robustft_cmd, run_ok

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "spatter", "elastic_transform"}
# mean |corrupted - clean| grows strictly with severity; not for the others, by the original parameters:
# saturate desaturates at 1-2 and oversaturates at 3-5, elastic's affine jitter shrinks as its warp grows, motion
# blur's 3 and 4 differ only in kernel taps of weight < 1e-9 (radius 6 vs 8 at σ = 2), glass blur's 1-3 differ in σ;
# spatter changes kind at 4 (water drops added, then mud replacing pixels), frost keeps less of bright images at 4-5
# but they clip less (tested on unclipped images below)
MONOTONE = sorted(set(CORRUPTIONS) - {"saturate", "elastic_transform", "motion_blur", "glass_blur", "snow", "spatter",
                                      "frost"})


def _images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth colour gradients with a flat square: natural-image-like enough for blur/JPEG/pixelate to act on."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    out = []
    for _ in range(n):
        a, b, c = torch.rand(3, generator=g)
        img = torch.stack([a * xx + (1 - a) * yy, b * (1 - xx), c * yy * xx + 0.2])
        r0, c0 = torch.randint(4, size - 12, (2,), generator=g).tolist()
        img[:, r0:r0 + 8, c0:c0 + 8] = torch.rand(3, 1, 1, generator=g)
        out.append(img.clamp(0, 1))
    return torch.stack(out)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return _images()


def test_coverage_is_the_whole_cifar_c_set():
    assert set(CORRUPTIONS) == {*CIFAR_C_BENCHMARK, *CIFAR_C_EXTRA} and len(CORRUPTIONS) == 19
    assert list(CORRUPTIONS)[-2:] == ["frost", "spatter"], "appended: the earlier 17 keep their seeds under `all`"
    assert parse_corruptions("benchmark") == list(CIFAR_C_BENCHMARK) and len(CIFAR_C_BENCHMARK) == 15


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_contract(name, x):
    distortion = []
    for severity in range(1, 6):
        out = corrupt(x, name, severity, seed=1)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, corrupt(x, name, severity, seed=1)), "deterministic for a seed"
        distortion.append((out - x).abs().mean().item())
    assert min(distortion) > 1e-4, "every severity changes the images"
    if name in RANDOM:
        assert not torch.equal(corrupt(x, name, 3, seed=1), corrupt(x, name, 3, seed=2))
    if name in MONOTONE:
        assert all(b > a for a, b in zip(distortion, distortion[1:], strict=False)), distortion
    elif name not in ("saturate", "elastic_transform"):
        assert distortion[-1] > distortion[0], distortion
    assert torch.equal(corrupt(x, name, 0), x), "severity 0 is the identity"
    double = corrupt(x.double(), name, 2, seed=1)
    assert double.dtype == torch.float64


def _decorrelation(x: torch.Tensor, y: torch.Tensor) -> float:
    """1 − Pearson correlation of clean and corrupted pixels, averaged over images: how much of the image is gone."""
    a, b = (t.flatten(1) - t.flatten(1).mean(1, keepdim=True) for t in (x, y))
    return 1 - ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean().item()


def test_frost_layer_grows_with_severity_and_matches_the_photographs(x):
    dark = x * 0.5  # nothing clips, so the frost layer's share (0.2/1 … 0.45/0.75) is what changes
    damage = [_decorrelation(dark, corrupt(dark, "frost", s, seed=3)) for s in range(1, 6)]
    assert all(b > a for a, b in zip(damage, damage[1:], strict=False)), damage
    layer = _frost_texture(400, 32, 32, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert layer.shape == (400, 3, 32, 32) and 0 <= layer.min() and layer.max() <= 1
    # the five photographs' mean colour (frost2 = frost3), bluish white; within-crop grey contrast 0.04-0.09
    assert layer.mean((0, 2, 3)).tolist() == pytest.approx([0.572, 0.656, 0.702], abs=0.03)
    assert 0.04 < layer.mean(1).std(dim=(1, 2)).mean().item() < 0.08
    grey = layer.mean(1) - layer.mean(1).mean((1, 2), keepdim=True)
    lag4 = ((grey[:, :, 4:] * grey[:, :, :-4]).mean() / grey.pow(2).mean()).item()
    assert 0.4 < lag4 < 0.85, "smooth on the scale of the photographs"


def test_spatter_covers_more_within_each_kind(x):
    changed = [((corrupt(x, "spatter", s, seed=1) - x).abs().amax(1) > 2 / 255).float().mean().item()
               for s in range(1, 6)]
    assert 0 < changed[0] < changed[1] < changed[2] and 0 < changed[3] < changed[4], changed  # water 1-3, mud 4-5
    mud = corrupt(x, "spatter", 5, seed=1)
    covered = (mud - x).abs().amax(1) > 2 / 255
    brown = torch.tensor([63, 42, 20]).view(3, 1) / 255  # fully covered pixels are mud brown
    full = (mud - brown.view(1, 3, 1, 1)).abs().amax(1) < 0.2
    assert (full & covered).any()


def test_canny_and_equalize_follow_opencv():
    img = torch.zeros(2, 16, 16, dtype=torch.float64)
    img[0, 4:12, 4:12] = 200  # a bright square: one closed ring of edges on its border, nothing in flat areas
    img[1, 4:12, 4:12] = 20  # |gx| + |gy| at most 120 < 150: weak pixels only, no edge
    edges = canny(img, 50, 150)
    ring = edges[0]
    assert ring.sum() > 0 and not edges[1].any()
    rows, cols = ring.nonzero().T  # OpenCV's thin ring: outside the square at the top and left (its > vs >=)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 11, 3, 11)
    assert not ring[5:10, 5:10].any() and scipy.ndimage.label(ring.numpy(), np.ones((3, 3)))[1] == 1
    two = torch.tensor([[[10.0, 10, 90, 90]]]).expand(1, 4, 4)
    assert equalize_hist(two).unique().tolist() == [0, 255]
    assert equalize_hist(torch.full((1, 4, 4), 7.0)).unique().tolist() == [7]
    ramp = torch.arange(16.0).view(1, 4, 4) * 3  # 16 distinct levels: the first maps to 0, the rest by 255·k/15
    assert equalize_hist(ramp).flatten().tolist() == [round(255 * k / 15) for k in range(16)]


def test_generator_argument_and_odd_sizes():
    x = _images(3, size=20)
    for name in CORRUPTIONS:  # non-32 px images work (size-relative parameters follow the image)
        out = corrupt(x, name, 5, generator=torch.Generator().manual_seed(0))
        assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


def test_exact_formulas(x):
    sigma = [0.4, 0.6, 0.7, 0.8, 1.0]
    for s in range(1, 6):  # skimage.filters.gaussian = scipy's filter, mode nearest, truncate 4
        expected = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma[s - 1], sigma[s - 1]), mode="nearest")
        assert np.allclose(corrupt(x, "gaussian_blur", s).numpy(), np.clip(expected, 0, 1), atol=1e-5)
    means = x.mean((2, 3), keepdim=True)
    assert torch.allclose(corrupt(x, "contrast", 5), ((x - means) * 0.15 + means).clamp(0, 1))
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6)
    v = x.amax(1, keepdim=True)  # brightness raises HSV value: each pixel's RGB scales by v'/v
    assert torch.allclose(corrupt(x, "brightness", 2), x * (v + 0.1).clamp(max=1) / v, atol=1e-5)


def test_pil_based_ones_match_pil(x):
    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, img in enumerate(u8):
        pil = Image.fromarray(img)
        small = pil.resize((int(32 * 0.65), int(32 * 0.65)), Image.BOX).resize((32, 32), Image.BOX)
        ours = corrupt(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, "pixelate", 5)[0]
        assert (ours.permute(1, 2, 0).numpy() * 255 - np.asarray(small)).__abs__().max() <= 1.5, i
    pil = Image.fromarray(u8[0])
    import io
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=40)
    expected = np.asarray(Image.open(buf)).astype(np.float32) / 255
    ours = corrupt(torch.from_numpy(u8[:1]).permute(0, 3, 1, 2).float() / 255, "jpeg_compression", 5)[0]
    assert np.allclose(ours.permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_zoom_blur_matches_scipy_zoom(x):
    def clipped_zoom(img, factor):  # the original's helper, H×W×C numpy
        h = img.shape[0]
        ch = int(np.ceil(h / factor))
        top = (h - ch) // 2
        z = scipy.ndimage.zoom(img[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
        t = (z.shape[0] - h) // 2
        return z[t:t + h, t:t + h]

    img = x[0].permute(1, 2, 0).numpy()
    factors = [1 + 0.01 * i for i in range(7)]
    expected = (img + sum(clipped_zoom(img, f) for f in factors)) / (len(factors) + 1)
    ours = corrupt(x[:1], "zoom_blur", 1)[0].permute(1, 2, 0).numpy()
    assert np.allclose(ours, np.clip(expected, 0, 1), atol=1e-5)


def test_dataset_copy_is_uint8_and_deterministic():
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randint(0, 256, (12, 3, 16, 16), generator=g, dtype=torch.uint8),
                        torch.arange(12) % 3, list("abc"), "rand")
    a, b = corrupt_dataset(data, "shot_noise", 3, seed=5), corrupt_dataset(data, "shot_noise", 3, seed=5)
    assert a.x.dtype == torch.uint8 and a.x.shape == data.x.shape and torch.equal(a.x, b.x)
    assert torch.equal(a.y, data.y) and a.classes == data.classes
    assert not torch.equal(a.x, data.x)
    assert corrupt_dataset(data, "contrast", 0) is data
    assert torch.equal(corrupt_dataset(data, "contrast", 1).x,
                       torch.floor(corrupt(data.x.float() / 255, "contrast", 1) * 255 + 1e-3).to(torch.uint8))


def test_parsing():
    assert parse_corruptions("all") == list(CORRUPTIONS)
    assert parse_corruptions("fog, contrast,fog") == ["fog", "contrast"]
    assert parse_corruptions(["pixelate"]) == ["pixelate"]
    assert parse_corruptions("frost,spatter") == ["frost", "spatter"]
    with pytest.raises(UserError, match="unknown corruption"):
        parse_corruptions("rain")
    assert parse_severities("all") == [1, 2, 3, 4, 5]
    assert parse_severities("1-3") == [1, 2, 3]
    assert parse_severities("5,1") == [1, 5]
    assert parse_severities(3) == [3]
    for bad in ("0", "6", "1-7", "x"):
        with pytest.raises(UserError):
            parse_severities(bad)
    with pytest.raises(UserError, match="0..5"):
        corrupt(torch.rand(1, 3, 8, 8), "fog", 6)


def test_evaluate_corruptions_record(tiny_model):
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randint(0, 256, (20, 3, 8, 8), generator=g, dtype=torch.uint8),
                        torch.randint(0, 4, (20,), generator=g), list("abcd"), "rand")
    res = evaluate_corruptions(tiny_model, data, "gaussian_noise,contrast", "1,5", batch_size=8, n=10)
    assert res.n == 10 and res.severities == [1, 5] and list(res.accuracy) == ["gaussian_noise", "contrast"]
    per = {k: (v[1] + v[5]) / 2 for k, v in res.accuracy.items()}
    assert res.mean_per_corruption == pytest.approx(per)
    assert res.mean == pytest.approx(sum(per.values()) / 2)
    d = res.to_dict()
    assert set(d["accuracy"]["contrast"]) == {"1", "5"} and "generated" in d["source"]
    assert json.loads(json.dumps(d)) == d
    assert "mean" in res.table()


def test_cli_evaluate_with_corruptions(tiny_task, tmp_path):
    data, _ = tiny_task
    ckpt = tmp_path / "model.pt"  # `evaluate` builds the default width
    torch.manual_seed(0)
    save_state_dict(create_model("cifar_resnet20", num_classes=4), ckpt)
    out = tmp_path / "eval.json"
    proc = run_ok(robustft_cmd("evaluate", "--data", str(data), "--arch", "cifar_resnet20", "--checkpoint", str(ckpt),
                               "--steps", "1", "--n", "16", "--corruptions", "gaussian_noise,pixelate",
                               "--severity", "2-3", "--json", str(out)))
    assert "mean corruption accuracy" in proc.stdout
    record = json.loads(out.read_text())
    c = record["corruptions"]
    assert c["severities"] == [2, 3] and c["n"] == 16
    assert set(c["accuracy"]) == {"gaussian_noise", "pixelate"}
    assert set(c["accuracy"]["pixelate"]) == {"2", "3"}
    assert set(c["mean_per_corruption"]) == {"gaussian_noise", "pixelate"}
    assert 0 <= c["mean"] <= 1 and "clean_acc" in record and "robust_acc" in record


def test_benchmark_mean_covers_the_15_cifar_c_corruptions(tiny_model):
    g = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8),
                        torch.randint(0, 4, (8,), generator=g), list("abcd"), "rand")
    res = evaluate_corruptions(tiny_model, data, "benchmark", "5", batch_size=8, progress=False)
    assert list(res.accuracy) == list(CIFAR_C_BENCHMARK)  # frost included: no published files needed
    assert res.mean == pytest.approx(sum(v[5] for v in res.accuracy.values()) / 15)
    assert {"frost", "motion_blur", "snow"} <= set(res.approximate)
