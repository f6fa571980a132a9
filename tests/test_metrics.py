"""Tests for :mod:`nas.metrics`.

References used:

* SSIM: ``skimage.metrics.structural_similarity`` (Gaussian window, population covariance).
* MEF-SSIM, Q^AB/F, FSIM: literal NumPy/SciPy ports (below) of the MATLAB code the metrics
  are defined by -- the authors' ``mef_ssim.m`` / ``mef_ms_ssim.m`` as shipped in MEFB, MEFB's
  ``metricsQabf.m`` and the authors' ``FeatureSIM.m`` with ``phasecong2`` -- keeping their
  per-pixel loops, ``filter2`` / ``conv2 'same'`` conventions and MATLAB ``median``.  These
  check the vectorised torch code against the MATLAB algorithms as written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d, correlate2d
from skimage import data
from skimage.metrics import structural_similarity
from skimage.transform import resize

from nas.metrics import (
    METRICS,
    QABF_MAX,
    MetricUnavailable,
    compute_all,
    fsim,
    lpips,
    mef_ssim,
    ms_ssim,
    psnr,
    qabf,
    ssim,
    ssim_map,
)

# --------------------------------------------------------------------------------------------
# Fixtures / helpers
# --------------------------------------------------------------------------------------------


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8/float -> (1, 3, H, W) float32 in [0, 1]."""
    arr = img.astype(np.float64)
    if img.dtype == np.uint8:
        arr = arr / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float()


def _to_hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).double().numpy()


@pytest.fixture(scope="module")
def natural() -> dict[str, torch.Tensor]:
    """Three bundled photos, cropped / resized to 96x128 (float32, [0, 1])."""
    return {
        "astronaut": _to_tensor(data.astronaut()[60:252, 120:376][::2, ::2]),
        "chelsea": _to_tensor(data.chelsea()[40:136, 100:228]),
        "coffee": _to_tensor(
            (resize(data.coffee(), (96, 128), anti_aliasing=True) * 255).round().astype(np.uint8)
        ),
    }


def _noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _exposures(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic under/over pair that differ well (gamma + gain, with clipping)."""
    under = (x**2.2 * 0.6).clamp(0, 1)
    over = (x ** (1 / 2.2) * 1.4).clamp(0, 1)
    return under, over


# --------------------------------------------------------------------------------------------
# Literal ports of the MATLAB reference code (slow, small images only)
# --------------------------------------------------------------------------------------------

MATLAB_EPS = np.finfo(np.float64).eps


def _fspecial_gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = (size - 1) / 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return h / h.sum()


def _matlab_rgb2gray(img: np.ndarray, uint8: bool) -> np.ndarray:
    coef = np.linalg.inv(np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1, -1.106, 1.703]]))
    g = img @ coef[0]
    return np.floor(g + 0.5) if uint8 else g


def _matlab_mef_ssim(img_seq: np.ndarray, f_i: np.ndarray, K: float = 0.03) -> float:
    """``mef_ssim.m`` line by line (img_seq: H x W x N, f_i: H x W, both 0-255 doubles)."""
    window = _fspecial_gaussian()
    s1, s2, s3 = img_seq.shape
    w_size = window.shape[0]
    s_window = np.ones((w_size, w_size)) / w_size**2
    bd = w_size // 2
    mu = np.zeros((s1 - 2 * bd, s2 - 2 * bd, s3))
    ed = np.zeros((s1 - 2 * bd, s2 - 2 * bd, s3))
    for i in range(s3):
        img = img_seq[:, :, i]
        mu[:, :, i] = correlate2d(img, s_window, "valid")  # filter2(.., 'valid')
        mu_sq = mu[:, :, i] * mu[:, :, i]
        sigma_sq = correlate2d(img * img, s_window, "valid") - mu_sq
        ed[:, :, i] = np.sqrt(np.maximum(w_size**2 * sigma_sq, 0)) + 0.001
    R = np.zeros((s1 - 2 * bd, s2 - 2 * bd))
    for i in range(bd, s1 - bd):
        for j in range(bd, s2 - bd):
            vecs = img_seq[i - bd : i + bd + 1, j - bd : j + bd + 1, :].reshape(-1, s3, order="F")
            denominator = 0.0
            for k in range(s3):
                denominator += np.linalg.norm(vecs[:, k] - mu[i - bd, j - bd, k])
            numerator = np.linalg.norm(vecs.sum(1) - vecs.sum(1).mean())
            R[i - bd, j - bd] = (numerator + MATLAB_EPS) / (denominator + MATLAB_EPS)
    R[R > 1] = 1 - MATLAB_EPS
    R[R < 0] = 0 + MATLAB_EPS
    p = np.tan(np.pi / 2 * R)
    p[p > 10] = 10
    p = np.repeat(p[:, :, None], s3, axis=2)
    w_map = (ed / w_size) ** p + MATLAB_EPS
    w_map = w_map / w_map.sum(2, keepdims=True)
    max_ed = ed.max(2)
    C = (K * 255) ** 2
    q_map = np.zeros((s1 - 2 * bd, s2 - 2 * bd))
    wv = window.ravel(order="F")
    for i in range(bd, s1 - bd):
        for j in range(bd, s2 - bd):
            blocks = img_seq[i - bd : i + bd + 1, j - bd : j + bd + 1, :]
            r_block = np.zeros((w_size, w_size))
            for k in range(s3):
                r_block = (
                    r_block
                    + w_map[i - bd, j - bd, k]
                    * (blocks[:, :, k] - mu[i - bd, j - bd, k])
                    / ed[i - bd, j - bd, k]
                )
            if np.linalg.norm(r_block.ravel()) > 0:
                r_block = r_block / np.linalg.norm(r_block.ravel()) * max_ed[i - bd, j - bd]
            f_block = f_i[i - bd : i + bd + 1, j - bd : j + bd + 1]
            r_vec = r_block.ravel(order="F")
            f_vec = f_block.ravel(order="F")
            mu1 = np.sum(wv * r_vec)
            mu2 = np.sum(wv * f_vec)
            sigma1_sq = np.sum(wv * (r_vec - mu1) ** 2)
            sigma2_sq = np.sum(wv * (f_vec - mu2) ** 2)
            sigma12 = np.sum(wv * (r_vec - mu1) * (f_vec - mu2))
            q_map[i - bd, j - bd] = (2 * sigma12 + C) / (sigma1_sq + sigma2_sq + C)
    return float(q_map.mean())


def _matlab_imfilter_down2(x: np.ndarray) -> np.ndarray:
    """``dI = imfilter(x, ones(2)/4, 'symmetric', 'same'); dI(1:2:end, 1:2:end)``."""
    p = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    d = (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:]) / 4
    return d[::2, ::2]


def _matlab_mef_ms_ssim(img_seq: np.ndarray, f_i: np.ndarray, level: int = 3) -> float:
    """``mef_ms_ssim.m`` (default weights for level 3)."""
    weight = np.array([0.0448, 0.2856, 0.3001])[:level]
    weight = weight / weight.sum()
    Q = []
    for lv in range(level):
        Q.append(_matlab_mef_ssim(img_seq, f_i))
        if lv < level - 1:
            img_seq = np.stack(
                [_matlab_imfilter_down2(img_seq[:, :, i]) for i in range(img_seq.shape[2])], 2
            )
            f_i = _matlab_imfilter_down2(f_i)
    return float(np.prod(np.array(Q) ** weight))


def _mefb_mef_ssim(fused: torch.Tensor, sources: list[torch.Tensor], uint8: bool) -> float:
    """``metricsMEF_SSIM.m``: rgb2gray per image, then ``mef_ms_ssim``."""

    def gray(t: torch.Tensor) -> np.ndarray:
        x = _to_hwc(t) * 255
        if uint8:
            x = np.floor(x + 0.5)
        return _matlab_rgb2gray(x, uint8)

    seq = np.stack([gray(s) for s in sources], 2)
    return _matlab_mef_ms_ssim(seq, gray(fused))


def _mefb_qabf_channel(str_a: np.ndarray, str_b: np.ndarray, str_f: np.ndarray) -> float:
    """``Qabf`` from MEFB's ``metricsQabf.m``, per-pixel loops kept (inputs 0-255 doubles)."""
    Tg, kg, Dg, Ta, ka, Da = 0.9994, -15, 0.5, 0.9879, -22, 0.8
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    pa, pb, pf = 255 * str_a, 255 * str_b, 255 * str_f  # 255 * im2double(double(.))

    def grad(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sx = convolve2d(p, h3, "same")
        sy = convolve2d(p, h1, "same")
        g = np.sqrt(sx**2 + sy**2)
        a = np.zeros_like(sx)
        for i in range(sx.shape[0]):
            for j in range(sx.shape[1]):
                a[i, j] = np.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, a

    g_a, a_a = grad(pa)
    g_b, a_b = grad(pb)
    g_f, a_f = grad(pf)

    def q(g_x: np.ndarray, a_x: np.ndarray) -> np.ndarray:
        out = np.zeros_like(g_x)
        for i in range(g_x.shape[0]):
            for j in range(g_x.shape[1]):
                if g_x[i, j] > g_f[i, j]:
                    G = g_f[i, j] / g_x[i, j]
                elif g_x[i, j] == g_f[i, j]:
                    G = g_f[i, j]
                else:
                    G = g_x[i, j] / g_f[i, j]
                A = 1 - abs(a_x[i, j] - a_f[i, j]) / (np.pi / 2)
                qg = Tg / (1 + math.exp(kg * (G - Dg)))
                qa = Ta / (1 + math.exp(ka * (A - Da)))
                out[i, j] = qg * qa
        return out

    return float(np.sum(q(g_a, a_a) * g_a + q(g_b, a_b) * g_b) / np.sum(g_a + g_b))


def _matlab_conv2_same(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """MATLAB ``conv2(x, h, 'same')``: central part of 'full', starting at floor(size(h)/2)."""
    full = convolve2d(x, h, "full")
    r0, c0 = h.shape[0] // 2, h.shape[1] // 2
    return full[r0 : r0 + x.shape[0], c0 : c0 + x.shape[1]]


def _kovesi_range(n: int) -> np.ndarray:
    if n % 2:
        return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
    return np.arange(-n / 2, n / 2) / n


def _matlab_phasecong2(im: np.ndarray) -> np.ndarray:
    """``phasecong2`` as bundled with ``FeatureSIM.m``."""
    nscale, norient, min_wl, mult, sigma_onf, d_theta, k, epsilon = 4, 4, 6, 2, 0.55, 1.2, 2.0, 1e-4
    theta_sigma = np.pi / norient / d_theta
    rows, cols = im.shape
    imagefft = np.fft.fft2(im)
    x, y = np.meshgrid(_kovesi_range(cols), _kovesi_range(rows))
    radius = np.fft.ifftshift(np.sqrt(x**2 + y**2))
    theta = np.fft.ifftshift(np.arctan2(-y, x))
    radius[0, 0] = 1
    sintheta, costheta = np.sin(theta), np.cos(theta)
    lp = np.fft.ifftshift(1.0 / (1.0 + (np.sqrt(x**2 + y**2) / 0.45) ** (2 * 15)))
    log_gabor = []
    for s in range(nscale):
        fo = 1.0 / (min_wl * mult**s)
        lg = np.exp(-(np.log(radius / fo) ** 2) / (2 * np.log(sigma_onf) ** 2)) * lp
        lg[0, 0] = 0
        log_gabor.append(lg)
    spread = []
    for o in range(norient):
        angl = o * np.pi / norient
        ds = sintheta * np.cos(angl) - costheta * np.sin(angl)
        dc = costheta * np.cos(angl) + sintheta * np.sin(angl)
        spread.append(np.exp(-(np.abs(np.arctan2(ds, dc)) ** 2) / (2 * theta_sigma**2)))
    energy_all = np.zeros((rows, cols))
    an_all = np.zeros((rows, cols))
    for o in range(norient):
        sum_e = np.zeros((rows, cols))
        sum_o = np.zeros((rows, cols))
        sum_an = np.zeros((rows, cols))
        energy = np.zeros((rows, cols))
        eo, ifft_filt = [], []
        for s in range(nscale):
            filt = log_gabor[s] * spread[o]
            ifft_filt.append(np.real(np.fft.ifft2(filt)) * np.sqrt(rows * cols))
            eo.append(np.fft.ifft2(imagefft * filt))
            sum_an += np.abs(eo[s])
            sum_e += np.real(eo[s])
            sum_o += np.imag(eo[s])
            if s == 0:
                em_n = np.sum(filt**2)
        x_energy = np.sqrt(sum_e**2 + sum_o**2) + epsilon
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        for s in range(nscale):
            E, O = np.real(eo[s]), np.imag(eo[s])
            energy += E * mean_e + O * mean_o - np.abs(E * mean_o - O * mean_e)
        median_e2n = np.median(np.abs(eo[0]).ravel() ** 2)
        noise_power = (-median_e2n / np.log(0.5)) / em_n
        est_sum_an2 = sum(f**2 for f in ifft_filt)
        est_sum_aiaj = sum(
            ifft_filt[i] * ifft_filt[j] for i in range(nscale - 1) for j in range(i + 1, nscale)
        )
        est2 = 2 * noise_power * est_sum_an2.sum() + 4 * noise_power * est_sum_aiaj.sum()
        tau = np.sqrt(est2 / 2)
        T = (tau * np.sqrt(np.pi / 2) + k * np.sqrt((2 - np.pi / 2) * tau**2)) / 1.7
        energy_all += np.maximum(energy - T, 0)
        an_all += sum_an
    return energy_all / an_all


def _matlab_feature_sim(ref: np.ndarray, dis: np.ndarray) -> tuple[float, float]:
    """``FeatureSIM.m`` (RGB 0-255 doubles) -> (FSIM, FSIMc)."""
    rows, cols = ref.shape[:2]

    def yiq(im: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, g, b = im[:, :, 0], im[:, :, 1], im[:, :, 2]
        return (
            0.299 * r + 0.587 * g + 0.114 * b,
            0.596 * r - 0.274 * g - 0.322 * b,
            0.211 * r - 0.523 * g + 0.312 * b,
        )

    y1, i1, q1 = yiq(ref)
    y2, i2, q2 = yiq(dis)
    F = max(1, int(np.floor(min(rows, cols) / 256 + 0.5)))
    ave = np.ones((F, F)) / F**2
    y1, y2, i1, i2, q1, q2 = (
        _matlab_conv2_same(z, ave)[0:rows:F, 0:cols:F] for z in (y1, y2, i1, i2, q1, q2)
    )
    pc1, pc2 = _matlab_phasecong2(y1), _matlab_phasecong2(y2)
    dx = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]]) / 16
    dy = np.array([[3, 10, 3], [0, 0, 0], [-3, -10, -3]]) / 16
    g1 = np.sqrt(_matlab_conv2_same(y1, dx) ** 2 + _matlab_conv2_same(y1, dy) ** 2)
    g2 = np.sqrt(_matlab_conv2_same(y2, dx) ** 2 + _matlab_conv2_same(y2, dy) ** 2)
    s_pc = (2 * pc1 * pc2 + 0.85) / (pc1**2 + pc2**2 + 0.85)
    s_g = (2 * g1 * g2 + 160) / (g1**2 + g2**2 + 160)
    pcm = np.maximum(pc1, pc2)
    fsim_v = np.sum(s_g * s_pc * pcm) / np.sum(pcm)
    s_i = (2 * i1 * i2 + 200) / (i1**2 + i2**2 + 200)
    s_q = (2 * q1 * q2 + 200) / (q1**2 + q2**2 + 200)
    chroma = np.real((s_i * s_q).astype(complex) ** 0.03)
    fsimc_v = np.sum(s_g * s_pc * chroma * pcm) / np.sum(pcm)
    return float(fsim_v), float(fsimc_v)


# --------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------


def test_psnr_known_values() -> None:
    ref = torch.full((2, 3, 8, 8), 0.5)
    assert torch.allclose(psnr(ref + 0.1, ref), torch.tensor([20.0, 20.0]), atol=1e-4)
    # data_range 255 with an error of 25.5 is also exactly 20 dB; error 1/255 of 1.0 -> 48.13 dB
    assert psnr(ref * 255 + 25.5, ref * 255, data_range=255).sub(20).abs().max() < 1e-4
    expected = 20 * math.log10(255)
    assert abs(psnr(ref + 1 / 255, ref)[0].item() - expected) < 1e-3
    out = psnr(ref, ref)
    assert out.shape == (2,) and torch.isinf(out).all() and (out > 0).all()


# --------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(
        structural_similarity(
            _to_hwc(a),
            _to_hwc(b),
            channel_axis=-1,
            data_range=1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def test_ssim_matches_skimage_random() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 40, 52, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    y[1] = torch.rand(3, 40, 52, generator=g)  # unrelated image: SSIM near 0
    ours = ssim(y, x)
    assert ours.shape == (3,)
    for i in range(3):
        assert abs(ours[i].item() - _skimage_ssim(y[i : i + 1], x[i : i + 1])) < 1e-4


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_ssim_matches_skimage_natural(natural: dict, name: str, sigma: float) -> None:
    x = natural[name]
    y = _noisy(x, sigma)
    assert abs(ssim(y, x).item() - _skimage_ssim(y, x)) < 1e-4
    # also a non-noise distortion: brightness/contrast change
    z = (0.8 * x + 0.15).clamp(0, 1)
    assert abs(ssim(z, x).item() - _skimage_ssim(z, x)) < 1e-4


def test_ssim_grey_and_identity(natural: dict) -> None:
    x = natural["chelsea"][:, 1:2]
    y = _noisy(x, 0.05)
    ref = structural_similarity(
        y[0, 0].double().numpy(),
        x[0, 0].double().numpy(),
        data_range=1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert abs(ssim(y, x).item() - ref) < 1e-4
    assert torch.allclose(ssim(x, x), torch.ones(1), atol=1e-6)
    assert ssim_map(y, x).shape == (1, 1, 86, 118)
    batch = torch.cat([x, y])
    assert ssim(batch, batch, reduction="mean").ndim == 0


def test_ssim_and_ms_ssim_gradients_finite(natural: dict) -> None:
    x = natural["astronaut"]
    for target in (_noisy(x, 0.1), 1.0 - x):  # 1 - x: anti-correlated, negative cs
        y = target.clone().requires_grad_(True)
        loss = (1 - ssim(y, x, reduction="mean")) + (1 - ms_ssim(y, x, reduction="mean"))
        loss.backward()
        assert y.grad is not None and torch.isfinite(y.grad).all()
        assert y.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# MS-SSIM
# --------------------------------------------------------------------------------------------


def test_ms_ssim_identity_and_scales(natural: dict) -> None:
    x = natural["coffee"]
    y = _noisy(x, 0.05)
    assert torch.allclose(ms_ssim(x, x), torch.ones(1), atol=1e-6)
    v = ms_ssim(y, x).item()
    assert 0.0 < v < 1.0
    # one weight = single-scale SSIM
    assert abs(ms_ssim(y, x, weights=(1.0,)).item() - ssim(y, x).item()) < 1e-6
    # 96x128 allows 4 of the 5 scales (96 -> 48 -> 24 -> 12): equals an explicit 4-weight call
    four = ms_ssim(y, x, weights=(0.0448, 0.2856, 0.3001, 0.2363))
    assert abs(four.item() - v) < 1e-6
    # a tiny image still works with one scale; smaller than the window raises
    assert ms_ssim(y[..., :12, :12], x[..., :12, :12]).shape == (1,)
    with pytest.raises(ValueError, match="x must be at least 11x11"):
        ms_ssim(y[..., :10, :10], x[..., :10, :10])


def test_ms_ssim_coarsest_scale_matches_skimage_on_downsampled(natural: dict) -> None:
    """Weights (0, 0, 1): SSIM of the twice-downsampled images (MATLAB imfilter + decimate)."""
    x = natural["chelsea"][..., :95, :]  # odd height exercises the 'symmetric' edge
    y = _noisy(x, 0.05)

    def down(t: torch.Tensor) -> np.ndarray:
        a = _to_hwc(t)
        for _ in range(2):
            a = np.stack([_matlab_imfilter_down2(a[:, :, c]) for c in range(3)], 2)
        return a

    ref = structural_similarity(
        down(y),
        down(x),
        channel_axis=-1,
        data_range=1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    ours = ms_ssim(y, x, weights=(0.0, 0.0, 1.0))
    assert abs(ours.item() - ref) < 1e-4


# --------------------------------------------------------------------------------------------
# FSIM
# --------------------------------------------------------------------------------------------


def test_fsim_matches_matlab_port(natural: dict) -> None:
    x = natural["astronaut"]
    y = _noisy(x, 0.04)
    ref_fsim, ref_fsimc = _matlab_feature_sim(_to_hwc(x) * 255, _to_hwc(y) * 255)
    assert abs(fsim(y, x).item() - ref_fsimc) < 1e-8
    assert abs(fsim(y, x, chromatic=False).item() - ref_fsim) < 1e-8
    assert abs(fsim(y[:, 1:2], x[:, 1:2]).item() - _fsim_grey_port(x, y)) < 1e-8


def _fsim_grey_port(x: torch.Tensor, y: torch.Tensor) -> float:
    # grey FSIM = FSIM on an RGB image whose three channels equal the grey one (Y = grey)
    xr = np.repeat(_to_hwc(x[:, 1:2]) * 255, 3, axis=2)
    yr = np.repeat(_to_hwc(y[:, 1:2]) * 255, 3, axis=2)
    return _matlab_feature_sim(xr, yr)[0]


def test_fsim_downsampling_branch_matches_matlab_port() -> None:
    """min(H, W) = 400 -> F = round(400/256) = 2: the 2x2 average filter + decimation path."""
    x = _to_tensor(data.coffee()[:400, :410])
    y = _noisy(x, 0.03, seed=3)
    ref = _matlab_feature_sim(_to_hwc(x) * 255, _to_hwc(y) * 255)[1]
    assert abs(fsim(y, x).item() - ref) < 1e-8


def test_fsim_identity_monotone_and_range(natural: dict) -> None:
    for x in natural.values():
        assert abs(fsim(x, x).item() - 1.0) < 1e-12
        assert abs(fsim(x[:, :1], x[:, :1]).item() - 1.0) < 1e-12
    x = natural["chelsea"]
    values = [fsim(_noisy(x, s), x).item() for s in (0.01, 0.02, 0.04, 0.08, 0.16)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    assert 0.97 < values[0] < 1.0  # very mild noise
    assert all(0.8 < v < 0.99 for v in values[1:3]), values  # mild distortions
    batch = fsim(torch.cat([x, _noisy(x, 0.04)]), torch.cat([x, x]))
    assert batch.shape == (2,) and batch.dtype == torch.float64
    assert abs(batch[1].item() - values[2]) < 1e-12


# --------------------------------------------------------------------------------------------
# MEF-SSIM
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_sequence(natural: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 48x52 exposure pair (under, over) and a fused image (mean), float32 in [0, 1]."""
    x = natural["astronaut"][..., 20:68, 40:92]
    under, over = _exposures(x)
    return under, over, 0.5 * (under + over)


def test_mef_ssim_single_scale_matches_matlab_port(small_sequence: tuple) -> None:
    under, over, fused = small_sequence
    for f in (fused, under, over, _noisy(fused, 0.05)):
        ours = mef_ssim(f, [under, over], scales=1).item()
        seq = np.stack([_matlab_rgb2gray(_to_hwc(s) * 255, False) for s in (under, over)], 2)
        ref = _matlab_mef_ssim(seq, _matlab_rgb2gray(_to_hwc(f) * 255, False))
        assert abs(ours - ref) < 1e-9, (ours, ref)


def test_mef_ssim_multiscale_matches_matlab_port(small_sequence: tuple) -> None:
    under, over, fused = small_sequence
    ours = mef_ssim(fused, [under, over]).item()
    assert abs(ours - _mefb_mef_ssim(fused, [under, over], uint8=False)) < 1e-9
    # 8-bit path (MEFB on images read from disk), and three exposures
    ours8 = mef_ssim(fused, [under, over], quantize=True).item()
    assert abs(ours8 - _mefb_mef_ssim(fused, [under, over], uint8=True)) < 1e-9
    mid = (0.5 * (under + over) ** 0.8).clamp(0, 1)
    ours3 = mef_ssim(fused, [under, mid, over], scales=2).item()
    seq = np.stack([_matlab_rgb2gray(_to_hwc(s) * 255, False) for s in (under, mid, over)], 2)
    f_g = _matlab_rgb2gray(_to_hwc(fused) * 255, False)
    w = np.array([0.0448, 0.2856]) / (0.0448 + 0.2856)
    q1 = _matlab_mef_ssim(seq, f_g)
    seq2 = np.stack([_matlab_imfilter_down2(seq[:, :, i]) for i in range(3)], 2)
    q2 = _matlab_mef_ssim(seq2, _matlab_imfilter_down2(f_g))
    assert abs(ours3 - q1 ** w[0] * q2 ** w[1]) < 1e-9


def test_mef_ssim_properties(natural: dict) -> None:
    x = natural["chelsea"]
    under, over = _exposures(x)
    # fused == one of two identical sources -> 1
    assert abs(mef_ssim(x, [x, x]).item() - 1.0) < 1e-6
    fused = 0.5 * (under + over)
    v = mef_ssim(fused, [under, over])
    assert v.shape == (1,) and v.dtype == torch.float64
    assert 0.5 < v.item() < 1.0
    assert mef_ssim(fused, [under, over], scales=1).item() < 1.0
    # no luminance term: adding a constant that does not clip leaves the score unchanged
    # (float64 so that the shift itself is exact to ~1e-17; float32 rounding moves it ~3e-8)
    shifted = fused.double() * 0.9 + 0.05
    base = mef_ssim(shifted, [under, over]).item()
    assert abs(mef_ssim(shifted + 0.04, [under, over]).item() - base) < 1e-10
    # deterministic and batch-consistent
    assert mef_ssim(fused, [under, over]).item() == v.item()
    batch = mef_ssim(torch.cat([fused, x]), [torch.cat([under, under]), torch.cat([over, over])])
    assert abs(batch[0].item() - v.item()) < 1e-12
    assert ((batch > 0) & (batch <= 1)).all()
    # stacked (B, K, C, H, W) sources are accepted
    stacked = torch.stack([under, over], dim=1)
    assert abs(mef_ssim(fused, stacked).item() - v.item()) < 1e-12
    # a noisy fused image is worse
    assert mef_ssim(_noisy(fused, 0.1), [under, over]).item() < v.item()


def test_mef_ssim_size_limits(small_sequence: tuple) -> None:
    under, over, fused = small_sequence  # 48x52: 48/4 = 12 >= 11, 3 scales allowed
    mef_ssim(fused, [under, over], scales=3)
    with pytest.raises(ValueError, match="too small for MEF-SSIM"):
        mef_ssim(fused, [under, over], scales=4, weights=(1, 1, 1, 1))
    tiny = [t[..., :20, :20] for t in (under, over)]
    assert mef_ssim(fused[..., :20, :20], tiny, scales=1).shape == (1,)


# --------------------------------------------------------------------------------------------
# Q^AB/F
# --------------------------------------------------------------------------------------------


def test_qabf_matches_mefb_port(natural: dict) -> None:
    x = natural["coffee"][..., 30:54, 40:66]
    under, over = _exposures(x)
    for fused, uint8 in ((0.5 * (under + over), False), (_noisy(x, 0.05), True)):
        ours = qabf(fused, under, over, quantize=uint8).item()
        prep = (
            (lambda t: np.floor(_to_hwc(t) * 255 + 0.5)) if uint8 else (lambda t: _to_hwc(t) * 255)
        )
        a, b, f = prep(under), prep(over), prep(fused)
        ref = np.mean([_mefb_qabf_channel(a[..., c], b[..., c], f[..., c]) for c in range(3)])
        assert abs(ours - ref) < 1e-10, (ours, ref)


def test_qabf_properties(natural: dict) -> None:
    x = natural["astronaut"]
    under, over = _exposures(x)
    expected_max = 0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert abs(QABF_MAX - expected_max) < 1e-15 and abs(QABF_MAX - 0.975333) < 1e-6
    assert abs(qabf(x, x, x).item() - QABF_MAX) < 1e-12  # identity: best attainable value
    # fused = a with b flat (black: no edges anywhere, even at the zero-padded border)
    assert abs(qabf(x, x, torch.zeros_like(x)).item() - QABF_MAX) < 1e-12
    v = qabf(0.5 * (under + over), under, over)
    assert v.dtype == torch.float64 and 0.3 < v.item() < QABF_MAX
    worse = qabf(_noisy(0.5 * (under + over), 0.1), under, over)
    assert worse.item() < v.item()
    # all flat: 0/0 convention -> QABF_MAX if the fused image is flat too, else 0
    flat = torch.full_like(x, 0.4)
    assert (
        abs(qabf(torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x)).item() - QABF_MAX)
        < 1e-12
    )
    assert qabf(flat, torch.zeros_like(x), torch.zeros_like(x)).item() == 0.0
    batch = qabf(torch.cat([x, flat]), torch.cat([under, under]), torch.cat([over, over]))
    assert batch.shape == (2,) and ((batch >= 0) & (batch <= QABF_MAX + 1e-12)).all()


# --------------------------------------------------------------------------------------------
# LPIPS
# --------------------------------------------------------------------------------------------


def test_lpips_unavailable_without_weights(natural: dict) -> None:
    x = natural["chelsea"]
    with pytest.raises(MetricUnavailable, match="weights"):
        lpips(x, x)
    with pytest.raises(MetricUnavailable, match="not found"):
        lpips(x, x, weights_path="/nonexistent/alex.pth")
    assert issubclass(MetricUnavailable, RuntimeError)
    with pytest.raises(ValueError, match="reference"):
        lpips(x, x[..., :50])


def test_lpips_forward_with_user_weights(tmp_path, natural: dict) -> None:
    """Structure only (random weights; the real ones cannot be downloaded here)."""
    g = torch.Generator().manual_seed(0)
    shapes = {
        0: (64, 3, 11),
        3: (192, 64, 5),
        6: (384, 192, 3),
        8: (256, 384, 3),
        10: (256, 256, 3),
    }
    backbone = {}
    for i, (co, ci, k) in shapes.items():
        backbone[f"features.{i}.weight"] = torch.randn(co, ci, k, k, generator=g) * 0.05
        backbone[f"features.{i}.bias"] = torch.zeros(co)
    lins = {
        f"lin{n}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
        for n, c in enumerate((64, 192, 384, 256, 256))
    }
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(lins, tmp_path / "lin.pth")
    paths = [tmp_path / "alexnet.pth", tmp_path / "lin.pth"]
    x = natural["chelsea"]
    y = _noisy(x, 0.1)
    assert lpips(x, x, paths).abs().max().item() < 1e-7
    d = lpips(y, x, paths)
    assert d.shape == (1,) and d.item() > 0
    assert abs(lpips(x, y, paths).item() - d.item()) < 1e-6
    with pytest.raises(MetricUnavailable, match="lack"):
        lpips(y, x, tmp_path / "lin.pth")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_and_compute_all(natural: dict) -> None:
    assert set(METRICS) == {"psnr", "ssim", "ms_ssim", "fsim", "lpips", "mef_ssim", "qabf"}
    for name, (fn, direction, needs) in METRICS.items():
        assert callable(fn)
        assert direction == ("lower" if name == "lpips" else "higher")
        assert needs in ("reference", "sources")
    x = natural["astronaut"]
    under, over = _exposures(x)
    fused = 0.5 * (under + over)
    out = compute_all(fused, under, over)
    assert set(out) == {"mef_ssim", "qabf"}
    assert abs(out["mef_ssim"] - mef_ssim(fused, [under, over]).item()) < 1e-12
    assert abs(METRICS["qabf"].fn(fused, [under, over]).item() - out["qabf"]) < 1e-12
    full = compute_all(fused, under, over, reference=x)
    assert set(full) == {"mef_ssim", "qabf", "psnr", "ssim", "ms_ssim", "fsim"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in full.values())
    with pytest.warns(UserWarning, match="lpips"):
        with_lpips = compute_all(fused, under, over, reference=x, include_lpips=True)
    assert math.isnan(with_lpips["lpips"])
    best = compute_all(x, x, x, reference=x)
    assert best["psnr"] == math.inf and abs(best["ssim"] - 1) < 1e-6
    assert abs(best["fsim"] - 1) < 1e-12 and abs(best["mef_ssim"] - 1) < 1e-6
    assert abs(best["qabf"] - QABF_MAX) < 1e-12 and abs(best["ms_ssim"] - 1) < 1e-6
    # small images: MEF-SSIM falls back to fewer scales
    small = compute_all(fused[..., :30, :30], under[..., :30, :30], over[..., :30, :30])
    assert math.isfinite(small["mef_ssim"])


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------

_REF_FUNCS = [psnr, ssim, ms_ssim, fsim, lpips]


@pytest.mark.parametrize("fn", _REF_FUNCS, ids=lambda f: f.__name__)
def test_reference_metrics_reject_bad_inputs(fn) -> None:
    x = torch.rand(1, 3, 40, 40)
    second = "y" if fn is ms_ssim else "reference"
    with pytest.raises(ValueError, match=second + r".*\(1, 3, 40, 36\)"):
        fn(x, x[..., :36])
    with pytest.raises(ValueError, match=r"4-D.*\(3, 40, 40\)"):
        fn(x[0], x[0])
    with pytest.raises(ValueError, match=r"channel.*\(1, 2, 40, 40\)"):
        fn(x[:, :2], x[:, :2])
    with pytest.raises(ValueError, match="floating-point"):
        fn((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))


def test_source_metrics_reject_bad_inputs() -> None:
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match="at least 2 exposures; got 0"):
        mef_ssim(x, [])
    with pytest.raises(ValueError, match="at least 2 exposures; got 1"):
        mef_ssim(x, [x])
    with pytest.raises(ValueError, match=r"sources\[1\].*\(1, 3, 40, 38\)"):
        mef_ssim(x, [x, x[..., :38]])
    with pytest.raises(ValueError, match=r"b.*\(1, 1, 40, 40\)"):
        qabf(x, x, x[:, :1])
    with pytest.raises(ValueError, match=r"fused.*4-D"):
        qabf(x[0], x, x)
    with pytest.raises(ValueError, match="exactly 2 exposures"):
        METRICS["qabf"].fn(x, [x, x, x])
    with pytest.raises(ValueError, match="over"):
        compute_all(x, x, x[..., :20])
    with pytest.raises(ValueError, match="reduction"):
        ssim(x, x, reduction="sum")


# --------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------------------------


@pytest.mark.cuda
def test_cuda_matches_cpu(natural: dict) -> None:
    x = natural["astronaut"]
    under, over = _exposures(x)
    fused = 0.5 * (under + over)
    cpu = compute_all(fused, under, over, reference=x)
    gpu = compute_all(fused.cuda(), under.cuda(), over.cuda(), reference=x.cuda())
    for name, value in cpu.items():
        assert abs(gpu[name] - value) < 1e-4 * max(1.0, abs(value)), name
    y = fused.cuda().requires_grad_(True)
    (1 - ms_ssim(y, x.cuda(), reduction="mean")).backward()
    assert torch.isfinite(y.grad).all()


def test_mef_ssim_differentiable_matches_metric_and_has_gradients(small_sequence: tuple) -> None:
    under, over, fused = small_sequence
    for scales in (1, 3):
        ref = mef_ssim(fused, [under, over], scales=scales)
        f = fused.clone().requires_grad_()
        got = mef_ssim(f, [under, over], scales=scales, differentiable=True)
        assert got.requires_grad and abs(got.item() - ref.item()) < 1e-12
        got.sum().backward()
        assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    # flat fused patches (where the metric's rounding guard would bind) keep finite gradients
    flat = torch.full_like(fused, 0.5).requires_grad_()
    mef_ssim(flat, [under, over], differentiable=True).sum().backward()
    assert torch.isfinite(flat.grad).all()
    with pytest.raises(ValueError, match="quantize"):
        mef_ssim(fused, [under, over], quantize=True, differentiable=True)
    # the metric itself still has no graph
    assert not mef_ssim(fused.clone().requires_grad_(), [under, over]).requires_grad


def test_look_statistics_hand_values() -> None:
    """RMS contrast and colourfulness against values worked by hand."""
    from nas.metrics import colourfulness, rms_contrast

    grey = torch.full((1, 3, 4, 4), 0.5)
    assert rms_contrast(grey).item() == 0.0
    assert colourfulness(grey).item() == 0.0
    # Half black, half white: luminance std 0.5; still grey, so no colour.
    bw = torch.zeros(1, 3, 2, 2)
    bw[..., 0, :] = 1.0
    assert rms_contrast(bw).item() == pytest.approx(0.5, abs=1e-12)
    assert colourfulness(bw).item() == 0.0
    # Pure red everywhere: rg = 255, yb = 127.5, no spread -> 0.3 * sqrt(255^2 + 127.5^2).
    red = torch.zeros(1, 3, 3, 3)
    red[:, 0] = 1.0
    assert colourfulness(red).item() == pytest.approx(0.3 * math.hypot(255.0, 127.5), rel=1e-12)
    # Half red, half green: rg = +-255 (std 255), yb = 127.5 (std 0); means 0 and 127.5.
    rg = torch.zeros(1, 3, 2, 2)
    rg[:, 0, 0, :] = 1.0
    rg[:, 1, 1, :] = 1.0
    assert colourfulness(rg).item() == pytest.approx(255.0 + 0.3 * 127.5, rel=1e-12)
    assert rms_contrast(rg).item() == pytest.approx((0.587 - 0.299) / 2, rel=1e-12)


def test_look_statistics_reject_grey_input() -> None:
    from nas.metrics import colourfulness

    with pytest.raises(ValueError, match="x"):
        colourfulness(torch.rand(1, 1, 8, 8))
