"""Batched torch image operations the common corruptions are built from: separable Gaussian filtering with scipy's
boundary modes, HSV conversion, clipped zoom, an ImageMagick-like motion blur, a plasma fractal, and OpenCV's Canny
edges and ``equalizeHist`` re-implemented in torch (see ``corruptions`` for how each is checked against the original).
"""

import functools
import math
from collections.abc import Sequence

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["pad_index", "filter_axis", "gaussian_filter", "rgb_to_hsv", "hsv_to_rgb", "box_matrix", "clipped_zoom",
           "motion_blur_lines", "plasma_fractal", "uniform", "standardize", "canny", "box3", "equalize_hist"]


def pad_index(n: int, r: int, mode: str, device: torch.device) -> Tensor:
    """Source indices of a length-``n`` axis padded by ``r`` on both sides: ``nearest`` repeats the edge,
    ``reflect`` is half-sample symmetric (scipy's reflect: d c b a | a b c d), ``reflect101`` mirrors about the edge
    pixel (OpenCV's default border, torch's reflect: d c b | a b c d)."""
    i = torch.arange(-r, n + r, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "reflect":
        j = i.remainder(2 * n)
        return torch.where(j < n, j, 2 * n - 1 - j)
    period = max(2 * n - 2, 1)
    j = i.remainder(period)
    return torch.where(j < n, j, period - j)


def filter_axis(x: Tensor, kernel: Tensor, dim: int, mode: str) -> Tensor:
    """Correlate the last-two-dims images ``x`` (N×C×H×W) with a 1-D centred ``kernel`` along ``dim`` (2 or 3)."""
    r = (len(kernel) - 1) // 2
    x = x.index_select(dim, pad_index(x.shape[dim], r, mode, x.device))
    n, c, h, w = x.shape
    k = kernel.to(x).view(1, 1, -1, 1) if dim == 2 else kernel.to(x).view(1, 1, 1, -1)
    return F.conv2d(x.reshape(n * c, 1, h, w), k).view(n, c, *((h - 2 * r, w) if dim == 2 else (h, w - 2 * r)))


def _gaussian_kernel(sigma: float, truncate: float) -> Tensor:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate·σ + 0.5), normalized."""
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_filter(x: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Tensor:
    """skimage.filters.gaussian over H and W (per channel); σ = 0 is the identity."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma, truncate)
    return filter_axis(filter_axis(x, k, 2, mode), k, 3, mode)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """skimage.color.rgb2hsv on N×3×H×W (h, s, v in [0, 1])."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    delta = v - x.min(1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    h = torch.where(r == v, (g - b) / safe, torch.zeros_like(v))
    h = torch.where(g == v, 2 + (b - r) / safe, h)  # later channels win ties, as in skimage
    h = torch.where(b == v, 4 + (r - g) / safe, h)
    h = torch.where(delta > 0, (h / 6).remainder(1.0), torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """skimage.color.hsv2rgb on N×3×H×W."""
    h, s, v = x.unbind(1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = hi.long().remainder(6)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = [torch.zeros_like(v) for _ in range(3)]
    for k, rgb in enumerate(table):
        sel = hi == k
        out = [torch.where(sel, new, old) for new, old in zip(rgb, out, strict=True)]
    return torch.stack(out, 1)


@functools.lru_cache(maxsize=64)
def box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PIL's BOX resampling from ``n_in`` to ``n_out`` samples as an n_out×n_in matrix (read off PIL itself by
    resizing unit impulses in float mode)."""
    out = np.empty((n_out, n_in), np.float32)
    for j in range(n_in):
        row = np.zeros((1, n_in), np.float32)
        row[0, j] = 1
        out[:, j] = np.asarray(Image.fromarray(row, mode="F").resize((n_out, 1), Image.BOX))[0]
    return out


def clipped_zoom(x: Tensor, factor: float) -> Tensor:
    """make_cifar_c's clipped_zoom: zoom the centre crop by ``factor`` (linear, corners aligned as
    scipy.ndimage.zoom) and cut the centre back to the original size."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    oh, ow = round(ch * factor), round(cw * factor)
    z = F.interpolate(x[..., top:top + ch, left:left + cw], size=(oh, ow), mode="bilinear", align_corners=True)
    th, tw = (oh - h) // 2, (ow - w) // 2
    return z[..., th:th + h, tw:tw + w]


def motion_blur_lines(x: Tensor, radius: int, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick-style motion blur (re-implemented): pixel (y, x) averages the source at (y + ⌈i·sinθ − ½⌉,
    x + ⌈i·cosθ − ½⌉), i = 0..2·radius, weights ∝ exp(−i²/2σ²), edge pixels repeated; θ per image (degrees)."""
    n, c, h, w = x.shape
    width = 2 * radius + 1
    i = torch.arange(width, device=x.device, dtype=torch.float64)
    weights = torch.exp(-i ** 2 / (2 * sigma ** 2))
    weights = (weights / weights.sum()).to(x.dtype)
    theta = torch.deg2rad(angles.to(torch.float64)).view(n, 1)
    dy = torch.ceil(i * torch.sin(theta) - 0.5).long()  # N×width
    dx = torch.ceil(i * torch.cos(theta) - 0.5).long()
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for k in range(width):
        idx = ((rows + dy[:, k].view(n, 1, 1)).clamp(0, h - 1) * w
               + (cols + dx[:, k].view(n, 1, 1)).clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
        out += weights[k] * flat.gather(2, idx)
    return out.view(n, c, h, w)


def plasma_fractal(n: int, size: int, decay: float, g: torch.Generator, device: torch.device) -> Tensor:
    """Diamond-square height maps in [0, 1] (make_cifar_c's plasma_fractal: start wibble 100, each level's noise
    wibble·U(−wibble, wibble), wibble divided by ``decay`` per level), ``n`` at once; ``size`` a power of two."""
    m = torch.zeros(n, size, size, dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def noisy_mean(total: Tensor) -> Tensor:
        noise = torch.rand(total.shape, generator=g, device=device, dtype=torch.float64) * 2 * wibble - wibble
        return total / 4 + wibble * noise

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        m[:, half::step, half::step] = noisy_mean(squares)
        centres, corners = m[:, half::step, half::step], m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = noisy_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, 0::step] = noisy_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step, wibble = half, wibble / decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def uniform(shape: Sequence[int], low: float, high: float, g: torch.Generator, device: torch.device) -> Tensor:
    """U(low, high) draws."""
    return torch.rand(tuple(shape), generator=g, device=device) * (high - low) + low


def standardize(t: Tensor) -> Tensor:
    """Zero mean, unit standard deviation per image (over C, H, W)."""
    t = t - t.mean((1, 2, 3), keepdim=True)
    return t / t.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)


def canny(img: Tensor, low: float, high: float) -> Tensor:
    """OpenCV's Canny edges (N×H×W boolean) of 8-bit grey images given as floats 0..255: 3×3 Sobel with replicated
    borders, L1 magnitude, its non-maximum suppression (22.5°/67.5° sectors, fixed-point tangent, zero magnitude
    outside the image), pixels above ``high`` kept with the ones above ``low`` 8-connected to them."""
    n, h, w = img.shape
    sobel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=img.dtype, device=img.device)
    padded = img[:, None].index_select(2, pad_index(h, 1, "nearest", img.device))
    padded = padded.index_select(3, pad_index(w, 1, "nearest", img.device))
    dx = F.conv2d(padded, sobel.view(1, 1, 3, 3))[:, 0]
    dy = F.conv2d(padded, sobel.T.reshape(1, 1, 3, 3))[:, 0]
    mag = dx.abs() + dy.abs()
    m = F.pad(mag, (1, 1, 1, 1))

    def at(oy: int, ox: int) -> Tensor:
        return m[:, 1 + oy:1 + oy + h, 1 + ox:1 + ox + w]

    tg22 = dx.abs() * 13573  # round(tan 22.5° · 2^15), as OpenCV
    horizontal = dy.abs() * 32768 < tg22
    vertical = dy.abs() * 32768 > tg22 + dx.abs() * 65536
    anti = (dx < 0) != (dy < 0)  # OpenCV's s = -1: the diagonal runs up-right
    diagonal = torch.where(anti, (mag > at(-1, 1)) & (mag > at(1, -1)), (mag > at(-1, -1)) & (mag > at(1, 1)))
    peak = torch.where(horizontal, (mag > at(0, -1)) & (mag >= at(0, 1)),
                       torch.where(vertical, (mag > at(-1, 0)) & (mag >= at(1, 0)), diagonal))
    weak = (peak & (mag > low)).cpu().numpy()
    strong = (peak & (mag > high)).cpu().numpy()
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected within an image, never across images
    labels, count = scipy.ndimage.label(weak, structure)
    keep = np.zeros(count + 1, bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    return torch.from_numpy(keep[labels]).to(img.device)


def box3(x: Tensor) -> Tensor:
    """OpenCV's ``blur(·, (3, 3))`` of N×H×W images (its default reflect-101 border)."""
    k = torch.full((3,), 1 / 3, dtype=torch.float64)
    return filter_axis(filter_axis(x[:, None], k, 2, "reflect101"), k, 3, "reflect101")[:, 0]


def equalize_hist(x: Tensor) -> Tensor:
    """OpenCV's ``equalizeHist`` of 8-bit N×H×W images given as floats: lut[i] = round(255·(cdf[i] − cdf[first]) /
    (total − hist[first])) from the first occupied bin; a constant image stays constant."""
    n = len(x)
    idx = x.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=x.device).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float32))
    cdf = hist.cumsum(1)
    first = (hist > 0).float().argmax(1, keepdim=True)
    base, count = cdf.gather(1, first), hist.gather(1, first)
    scale = 255 / (idx.shape[1] - count).clamp_min(1)
    lut = torch.where(count == idx.shape[1], first.float(), torch.round((cdf - base) * scale).clamp(0, 255))
    return lut.gather(1, idx).view_as(x).to(x.dtype)
