"""Batch augmentation in torch on the batch's own device (the GPU when there is one).

``GpuAugment``: uint8 N×S×S×3 → normalised float32 N×3×S×S with a random affine (scale, shift,
rotation, horizontal flip; one ``affine_grid``/``grid_sample``), brightness/contrast jitter and
random grayscale, and optionally the misalignment a detector's landmark noise causes (``landmark_jitter``: the
5 landmarks moved by Gaussian noise and the crop re-aligned by the least-squares similarity, as the runtime's
alignment would cut it) and the low-pass of a face shrunk onto the crop (``blur``: a Gaussian of random σ, as the
runtime's anti-aliased alignment applies to a large face) and additive Gaussian pixel noise (``noise``: σ drawn per face,
as a camera's sensor noise). ``to_input``: the eval path, normalisation only, equal to
``edge_affect.runtime.preprocess.normalize`` (tested to 1e-6). A horizontal flip keeps every label
valid here: valence/arousal and expressions are symmetric, and the 12 ABAW AUs are scored bilaterally.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edge_affect.schema import Preprocess

_LUMA = (0.299, 0.587, 0.114)
#: The 5 alignment points (eyes, nose, mouth corners) as fractions of the crop: the ArcFace template the runtime
#: aligns onto (``edge_affect.runtime.align.ARCFACE_TEMPLATE_112`` / 112). Landmark noise is drawn around them.
LANDMARKS_FRAC = (
    (0.3419, 0.4616),
    (0.6565, 0.4598),
    (0.5002, 0.6405),
    (0.3710, 0.8247),
    (0.6315, 0.8232),
)


def similarity_lstsq(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Batched least-squares similarity (rotation, uniform scale, translation) mapping ``src`` → ``dst``
    (N×K×2 each) as N×2×3 matrices, the closed form of the runtime's 2-D Umeyama fit."""
    ms, md = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    p, q = src - ms, dst - md
    den = (p**2).sum((1, 2)).clamp_min(1e-12)
    a = (p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1]).sum(1) / den
    b = (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(1) / den
    rot = torch.stack([torch.stack([a, -b], 1), torch.stack([b, a], 1)], 1)  # N×2×2
    t = md[:, 0] - (rot @ ms[:, 0, :, None])[..., 0]
    return torch.cat([rot, t[..., None]], 2)


def _check_batch(batch: torch.Tensor) -> None:
    if not isinstance(batch, torch.Tensor) or batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[3] != 3:
        got = f"{batch.dtype} {tuple(batch.shape)}" if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ValueError(f"expected a uint8 N×H×W×3 tensor, got {got}")


def _mean_std(pp: Preprocess, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(pp.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean, std


def _to_unit(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC → float32 NCHW in [0, 1], with the same float32 ops as the numpy ``normalize``."""
    return batch.permute(0, 3, 1, 2).contiguous().to(torch.float32).mul_(1.0 / 255.0)


def to_input(batch_uint8: torch.Tensor, pp: Preprocess) -> torch.Tensor:
    """Eval path: uint8 N×S×S×3 → N×3×S×S float32 ``(x/255 - mean)/std`` (no augmentation)."""
    _check_batch(batch_uint8)
    mean, std = _mean_std(pp, batch_uint8.device)
    return _to_unit(batch_uint8).sub_(mean).div_(std)


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """N×2×3 affine maps: ``outer ∘ inner`` (apply ``inner`` first)."""
    return torch.cat([outer[:, :, :2] @ inner[:, :, :2], (outer[:, :, :2] @ inner[:, :, 2:]) + outer[:, :, 2:]], 2)


class GpuAugment:
    """Random train-time augmentation of a uint8 N×S×S×3 batch, returned normalised (N×3×S×S).

    Parameters are drawn on the CPU (``seed`` makes them reproducible on any device) and applied
    where the batch lives. ``scale`` < 1 zooms in; ``max_shift`` is a fraction of the image size.
    """

    def __init__(
        self,
        pp: Preprocess,
        scale: tuple[float, float] = (0.85, 1.0),
        max_shift: float = 0.06,
        max_rotate_deg: float = 10.0,
        flip: bool = True,
        brightness: float = 0.2,
        contrast: float = 0.2,
        gray_prob: float = 0.1,
        erase_prob: float = 0.0,
        erase_area: tuple[float, float] = (0.02, 0.2),
        landmark_jitter: float = 0.0,
        blur: float = 0.0,
        blur_prob: float = 1.0,
        noise: float = 0.0,
        seed: int | None = None,
    ) -> None:
        lo, hi = scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale={scale}, expected 0 < low <= high")
        for name, v in (
            ("max_shift", max_shift),
            ("max_rotate_deg", max_rotate_deg),
            ("brightness", brightness),
            ("contrast", contrast),
        ):
            if v < 0:
                raise ValueError(f"{name}={v}, expected >= 0")
        if brightness >= 1 or contrast >= 1:
            raise ValueError(f"brightness={brightness}, contrast={contrast}: expected values < 1")
        if not 0 <= gray_prob <= 1:
            raise ValueError(f"gray_prob={gray_prob}, expected a probability in [0, 1]")
        if not 0 <= erase_prob <= 1:
            raise ValueError(f"erase_prob={erase_prob}, expected a probability in [0, 1]")
        if not 0 <= landmark_jitter <= 0.1:
            raise ValueError(f"landmark_jitter={landmark_jitter}, expected a fraction of the crop in [0, 0.1]")
        if not 0 <= blur <= 1:
            raise ValueError(f"blur={blur}, expected the largest Gaussian σ in crop pixels, in [0, 1]")
        if not 0 <= blur_prob <= 1:
            raise ValueError(f"blur_prob={blur_prob}, expected a probability in [0, 1]")
        if not 0 <= noise <= 0.25:
            raise ValueError(f"noise={noise}, expected the largest pixel-noise σ as a fraction of full scale, in [0, 0.25]")
        if not 0 < erase_area[0] <= erase_area[1] < 1:
            raise ValueError(f"erase_area={erase_area}, expected 0 < low <= high < 1 (fractions of the image)")
        self.pp = pp
        self.scale = (float(lo), float(hi))
        self.max_shift = float(max_shift)
        self.max_rotate_deg = float(max_rotate_deg)
        self.flip = flip
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gray_prob = float(gray_prob)
        self.erase_prob = float(erase_prob)
        self.erase_area = (float(erase_area[0]), float(erase_area[1]))
        self.landmark_jitter = float(landmark_jitter)
        self.blur = float(blur)
        self.blur_prob = float(blur_prob)
        self.noise = float(noise)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.geometric = (
            self.scale != (1.0, 1.0)
            or self.max_shift > 0
            or self.max_rotate_deg > 0
            or flip
            or self.landmark_jitter > 0
        )

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def affine(self, n: int, size: int = 112) -> torch.Tensor:
        """N×2×3 ``affine_grid`` matrices (output → input coordinates), drawn on the CPU."""
        lo, hi = self.scale
        s = lo + (hi - lo) * self._rand(n)
        a = (2 * self._rand(n) - 1) * math.radians(self.max_rotate_deg)
        t = (2 * self._rand(n, 2) - 1) * (2 * self.max_shift)  # grid coordinates span 2 per image
        f = torch.where(self._rand(n) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
        cos, sin = torch.cos(a) * s, torch.sin(a) * s
        theta = torch.stack([torch.stack([cos * f, -sin, t[:, 0]], 1), torch.stack([sin * f, cos, t[:, 1]], 1)], 1)
        if self.landmark_jitter > 0:
            theta = _compose(theta, self.misalignment(n, size))
        return theta

    def misalignment(self, n: int, size: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """N×2×3 ``affine_grid`` matrices: the crop the runtime would cut from landmarks moved by ``noise``
        (N×5×2, grid units; default N(0, ``landmark_jitter`` × crop side)), from the clean ``size``-px crop.

        The runtime fits the similarity M from the (moved) landmarks to the template; for a clean crop whose
        landmarks sit on the template, M equals the fit ``template + noise → template`` after the clean
        alignment, so output point u samples the clean crop at that fit's inverse."""
        frac = torch.tensor(LANDMARKS_FRAC, dtype=torch.float32)
        tpl = ((2 * frac * size + 1) / size - 1).expand(n, -1, -1)  # pixel centres in grid coordinates
        if noise is None:
            noise = torch.randn(n, *tpl.shape[1:], generator=self.generator) * (2 * self.landmark_jitter)
        fit = similarity_lstsq(tpl + noise.to(tpl.dtype), tpl)
        inv = torch.linalg.inv(fit[:, :, :2])
        return torch.cat([inv, -(inv @ fit[:, :, 2:])], 2)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        _check_batch(batch)
        return self._views(batch, pair=False)

    def pair(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views of each face that differ only as two frames of a still face do: by a detector's landmark noise
        (with ``landmark_jitter``: the second crop re-aligned from landmarks moved once more, ``misalignment``) and by
        sensor noise (with ``noise``: each view its own pixel-noise field, of the face's one σ); the same random
        affine, blur, colour and erasing. For a consistency term (``TrainConfig.consistency``) that asks the
        prediction not to move with them."""
        _check_batch(batch)
        if self.landmark_jitter <= 0 and self.noise <= 0:
            raise ValueError(
                "GpuAugment.pair needs landmark_jitter > 0 or noise > 0: the two views differ by those perturbations only"
            )
        both = self._views(batch, pair=True)
        return both[: batch.shape[0]], both[batch.shape[0] :]

    def _views(self, batch: torch.Tensor, pair: bool) -> torch.Tensor:
        n, dev = batch.shape[0], batch.device
        x = _to_unit(batch)
        if self.geometric:
            theta = self.affine(n, x.shape[-1])
            if pair:
                second = _compose(theta, self.misalignment(n, x.shape[-1])) if self.landmark_jitter > 0 else theta
                theta = torch.cat([theta, second])
                x = torch.cat([x, x])
            grid = F.affine_grid(theta.to(dev), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        elif pair:
            x = torch.cat([x, x])
        reps = 2 if pair else 1
        if self.blur and self.blur_prob:
            x = self._blur(x, reps)
        if self.brightness or self.contrast or self.gray_prob:
            x = self._color(x, reps)
        if self.noise:
            x = self._noise(x, reps)
        mean, std = _mean_std(self.pp, dev)
        x = x.sub_(mean).div_(std)  # x is a fresh float tensor here, never the input
        if self.erase_prob:
            x = x * self.erase_mask(n, x.shape[-2], x.shape[-1]).repeat(reps, 1, 1, 1).to(dev)
        return x.contiguous()

    def _blur(self, x: torch.Tensor, reps: int = 1) -> torch.Tensor:
        """A separable Gaussian blur per sample, σ ~ U(0, ``blur``) crop pixels (the same for the ``reps`` views of
        a face): the low-pass ``edge_affect.runtime.align.antialiased_source`` gives a face the warp shrinks by s,
        0.5·√(1 − s²) crop px, so ``blur = 0.5`` covers every face size. With ``blur_prob`` < 1 only that share of
        the faces is blurred (the rest stay sharp, as small faces reach the crop). Edges reflect, as the warp does."""
        b, c, h, w = x.shape
        n = b // reps
        sigma = self._rand(n) * self.blur
        if self.blur_prob < 1:  # drawn only then: blur_prob = 1 keeps the random stream of a blur-only run
            sigma = torch.where(self._rand(n) < self.blur_prob, sigma, torch.zeros_like(sigma))
        sigma = sigma.repeat(reps)
        r = max(1, math.ceil(3 * self.blur))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-(t[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.device)  # (b·c)×(2r+1)
        y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
        y = F.conv2d(y, k[:, None, :, None], groups=b * c)  # along H
        y = F.conv2d(y, k[:, None, None, :], groups=b * c)  # along W
        return y.reshape(b, c, h, w)

    def _noise(self, x: torch.Tensor, reps: int = 1) -> torch.Tensor:
        """Additive Gaussian noise per pixel and channel, σ ~ U(0, ``noise``) of full scale per face (the same σ for
        the ``reps`` views of a face, each view its own field, as two frames' sensor noise); clamped to [0, 1].
        A ``gray`` model gets one field copied to its three channels, as its camera image has one channel. Drawn on
        the CPU like every other draw, so a seed gives the same noise on any device."""
        b, c, h, w = x.shape
        n = b // reps
        sigma = (self._rand(n) * self.noise).repeat(reps).view(b, 1, 1, 1)
        gray = self.pp.color == "gray"
        field = (torch.randn(b, 1 if gray else c, h, w, generator=self.generator) * sigma).expand(b, c, h, w)
        return (x + field.to(x.device, x.dtype)).clamp_(0.0, 1.0)

    def erase_mask(self, n: int, h: int, w: int) -> torch.Tensor:
        """Random erasing (Zhong et al. 2020): with ``erase_prob`` per sample, a rectangle covering a
        fraction ``erase_area`` of the image (aspect 1/3..3) is set to the dataset mean (0 after
        normalisation). Returns an N×1×H×W {0, 1} multiplier, drawn on the CPU."""
        lo, hi = self.erase_area
        area = (lo + (hi - lo) * self._rand(n)) * h * w
        aspect = torch.exp((2 * self._rand(n) - 1) * math.log(3.0))
        eh = (area * aspect).sqrt().clamp(1, h)
        ew = (area / aspect).sqrt().clamp(1, w)
        y0 = self._rand(n) * (h - eh)
        x0 = self._rand(n) * (w - ew)
        on = (self._rand(n) < self.erase_prob).view(n, 1, 1)
        ys = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
        inside = (
            (ys >= y0.view(n, 1, 1))
            & (ys < (y0 + eh).view(n, 1, 1))
            & (xs >= x0.view(n, 1, 1))
            & (xs < (x0 + ew).view(n, 1, 1))
        )
        return (~(inside & on)).to(torch.float32).unsqueeze(1)

    def _color(self, x: torch.Tensor, reps: int = 1) -> torch.Tensor:
        """Brightness and contrast jitter (per sample), then grayscale with ``gray_prob``; clamped to [0, 1].
        ``reps``: ``x`` holds that many views of the same faces one after another, which get the same draws."""
        n, dev = x.shape[0] // reps, x.device
        b = (1 + (2 * self._rand(n) - 1) * self.brightness).repeat(reps).to(dev).view(-1, 1, 1, 1)
        c = (1 + (2 * self._rand(n) - 1) * self.contrast).repeat(reps).to(dev).view(-1, 1, 1, 1)
        gray = torch.nonzero((self._rand(n) < self.gray_prob).repeat(reps)).flatten().to(dev)
        luma_w = torch.tensor(_LUMA, dtype=x.dtype, device=dev).view(1, 3, 1, 1)
        # brightness x*b, then contrast around the mean luma m of x*b: (x*b - m)*c + m, in one pass.
        m = b * (x.mean((2, 3), keepdim=True) * luma_w).sum(1, keepdim=True)
        x = torch.addcmul(m * (1 - c), x, b * c)
        if gray.numel():
            x[gray] = (x[gray] * luma_w).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        return x.clamp_(0.0, 1.0)
