"""Image-quality metrics for multi-exposure image fusion (MEF).

All metrics are plain functions on ``torch`` tensors of shape ``(B, C, H, W)`` with values in
``[0, data_range]`` (``data_range`` defaults to 1.0), ``C`` = 3 (RGB) or, where it makes sense,
``C`` = 1 (grey).  Each returns a ``(B,)`` tensor of per-image values on the input's device;
the caller averages.  Nothing hard-codes a device.

==========  =========================================  =========  ============  ===========
name        reference                                  direction  needs         autograd
==========  =========================================  =========  ============  ===========
psnr        (textbook)                                 higher     reference     yes
ssim        Wang et al. 2004, IEEE TIP 13(4)           higher     reference     yes
ms_ssim     Wang, Simoncelli & Bovik 2003, Asilomar    higher     reference     yes
fsim        Zhang et al. 2011, IEEE TIP 20(8) (FSIMc)  higher     reference     no
mef_ssim    Ma, Zeng & Wang 2015, IEEE TIP 24(11)      higher     sources       opt-in
qabf        Xydeas & Petrovic 2000, Electron. Lett.    higher     sources       no
lpips       Zhang et al. 2018, CVPR (AlexNet, v0.1)    lower      reference     yes
==========  =========================================  =========  ============  ===========

``ssim`` and ``ms_ssim`` are differentiable and keep the input dtype (training losses use
``1 - ssim(...)``).  ``fsim``, ``mef_ssim`` and ``qabf`` re-implement the authors' / MEFB's
MATLAB code, run in float64 under ``torch.no_grad()`` and return float64 (``mef_ssim(...,
differentiable=True)`` keeps the graph: it is the no-reference training objective).  ``psnr``
returns the input dtype.  :data:`METRICS` maps each name to ``(function, direction, needs)`` and
:func:`compute_all` evaluates every applicable metric on a batch.

Bad inputs raise :class:`ValueError` naming the argument and its shape.  :class:`MetricUnavailable`
(a :class:`RuntimeError`) is raised where a metric cannot be computed in this environment
(LPIPS without its weights file).

Layout: :mod:`~nas.metrics.basic` (:class:`MetricUnavailable`, input checks, MATLAB-style
pixel helpers, ``psnr``), :mod:`~nas.metrics.structural` (Gaussian windows, ``ssim``,
``ssim_map``, ``ms_ssim``), :mod:`~nas.metrics.feature_similarity` (``fsim``),
:mod:`~nas.metrics.mef` (``mef_ssim``), :mod:`~nas.metrics.edge` (``qabf``, :data:`QABF_MAX`),
:mod:`~nas.metrics.perceptual` (``lpips``), :mod:`~nas.metrics.look` (``rms_contrast``,
``colourfulness``: washed-out checks read beside a reference fusion) and
:mod:`~nas.metrics.registry` (:data:`METRICS`, :func:`compute_all`).  Import from
``nas.metrics``; every name is re-exported here.
"""

from __future__ import annotations

from nas.metrics.basic import _EPS64 as _EPS64
from nas.metrics.basic import MetricUnavailable, psnr
from nas.metrics.basic import _check_data_range as _check_data_range
from nas.metrics.basic import _check_image as _check_image
from nas.metrics.basic import _check_min_size as _check_min_size
from nas.metrics.basic import _check_pair as _check_pair
from nas.metrics.basic import _check_window as _check_window
from nas.metrics.basic import _conv2_same_zero as _conv2_same_zero
from nas.metrics.basic import _matlab_downsample2 as _matlab_downsample2
from nas.metrics.basic import _round_half_away as _round_half_away
from nas.metrics.edge import _QABF_DA as _QABF_DA
from nas.metrics.edge import _QABF_DG as _QABF_DG
from nas.metrics.edge import _QABF_KA as _QABF_KA
from nas.metrics.edge import _QABF_KG as _QABF_KG
from nas.metrics.edge import _QABF_TA as _QABF_TA
from nas.metrics.edge import _QABF_TG as _QABF_TG
from nas.metrics.edge import QABF_MAX, qabf
from nas.metrics.edge import _qabf_preservation as _qabf_preservation
from nas.metrics.edge import _qabf_sobel as _qabf_sobel
from nas.metrics.feature_similarity import _pc_range as _pc_range
from nas.metrics.feature_similarity import _phasecong2 as _phasecong2
from nas.metrics.feature_similarity import fsim
from nas.metrics.look import colourfulness, rms_contrast
from nas.metrics.mef import _MEF_SSIM_WEIGHTS as _MEF_SSIM_WEIGHTS
from nas.metrics.mef import _RGB2GRAY as _RGB2GRAY
from nas.metrics.mef import _as_source_list as _as_source_list
from nas.metrics.mef import _mef_ssim as _mef_ssim
from nas.metrics.mef import _mef_ssim_scale as _mef_ssim_scale
from nas.metrics.mef import _to_gray255 as _to_gray255
from nas.metrics.mef import mef_ssim
from nas.metrics.perceptual import _ALEX_CONVS as _ALEX_CONVS
from nas.metrics.perceptual import _LPIPS_CHANNELS as _LPIPS_CHANNELS
from nas.metrics.perceptual import _LPIPS_SCALE as _LPIPS_SCALE
from nas.metrics.perceptual import _LPIPS_SHIFT as _LPIPS_SHIFT
from nas.metrics.perceptual import _load_lpips_weights as _load_lpips_weights
from nas.metrics.perceptual import _lpips_required_keys as _lpips_required_keys
from nas.metrics.perceptual import lpips
from nas.metrics.registry import METRICS, MetricSpec, compute_all
from nas.metrics.registry import _qabf_from_sources as _qabf_from_sources
from nas.metrics.structural import _MS_SSIM_CLAMP as _MS_SSIM_CLAMP
from nas.metrics.structural import _SSIM_K1 as _SSIM_K1
from nas.metrics.structural import _SSIM_K2 as _SSIM_K2
from nas.metrics.structural import MS_SSIM_WEIGHTS as MS_SSIM_WEIGHTS
from nas.metrics.structural import _gaussian_1d as _gaussian_1d
from nas.metrics.structural import _num_scales as _num_scales
from nas.metrics.structural import _sep_filter_valid as _sep_filter_valid
from nas.metrics.structural import _ssim_and_cs_maps as _ssim_and_cs_maps
from nas.metrics.structural import ms_ssim, ssim, ssim_map

__all__ = [
    "METRICS",
    "MetricSpec",
    "MetricUnavailable",
    "QABF_MAX",
    "colourfulness",
    "compute_all",
    "fsim",
    "lpips",
    "mef_ssim",
    "ms_ssim",
    "psnr",
    "qabf",
    "rms_contrast",
    "ssim",
    "ssim_map",
]
