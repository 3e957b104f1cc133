"""GpuAugment and to_input: shapes, ranges, eval-path equality with the numpy normalize, flip, determinism."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="augmentation needs torch (the train extra)")

from edge_affect.data.augment import GpuAugment, to_input  # noqa: E402
from edge_affect.runtime.preprocess import normalize  # noqa: E402
from edge_affect.schema import Preprocess  # noqa: E402

PP = Preprocess(input_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _batch(n: int = 16, s: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, s, s, 3), dtype=np.uint8))


@pytest.mark.parametrize("device", DEVICES)
def test_to_input_matches_numpy_normalize(device: str) -> None:
    x = _batch()
    ref = normalize(x.numpy(), PP)
    got = to_input(x.to(device), PP).cpu().numpy()
    assert got.dtype == np.float32 and got.shape == ref.shape == (16, 3, 32, 32)
    assert float(np.abs(got - ref).max()) <= 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_augment_shape_and_range(device: str) -> None:
    aug = GpuAugment(PP, seed=0)
    y = aug(_batch().to(device))
    assert y.dtype == torch.float32 and tuple(y.shape) == (16, 3, 32, 32) and y.device.type == device
    lo = (0 - torch.tensor(PP.mean)) / torch.tensor(PP.std)
    hi = (1 - torch.tensor(PP.mean)) / torch.tensor(PP.std)
    per_c = y.cpu().transpose(0, 1).reshape(3, -1)
    assert bool((per_c.min(1).values >= lo - 1e-5).all()) and bool((per_c.max(1).values <= hi + 1e-5).all())
    assert float((y.cpu() - to_input(_batch(), PP)).abs().mean()) > 0.05, "augmentation must change the batch"


def test_identity_settings_equal_eval_path() -> None:
    aug = GpuAugment(
        PP, scale=(1.0, 1.0), max_shift=0, max_rotate_deg=0, flip=False, brightness=0, contrast=0, gray_prob=0
    )
    x = _batch()
    assert float((aug(x) - to_input(x, PP)).abs().max()) <= 1e-6


def test_grid_sample_identity_is_exact() -> None:
    """A zero-strength affine still goes through grid_sample; it must reproduce the pixels (≤1e-5)."""
    aug = GpuAugment(
        PP, scale=(1.0, 1.0), max_shift=0, max_rotate_deg=0, flip=False, brightness=0, contrast=0, gray_prob=0
    )
    aug.geometric = True
    x = _batch()
    assert float((aug(x) - to_input(x, PP)).abs().max()) <= 1e-5


def test_flip_is_mirror_and_random() -> None:
    aug = GpuAugment(
        PP, scale=(1.0, 1.0), max_shift=0, max_rotate_deg=0, flip=True, brightness=0, contrast=0, gray_prob=0, seed=1
    )
    x = _batch(64)
    y, ref = aug(x), to_input(x, PP)
    same = (y - ref).abs().amax((1, 2, 3)) <= 1e-5
    mirrored = (y - ref.flip(3)).abs().amax((1, 2, 3)) <= 1e-5
    assert bool((same | mirrored).all())
    assert 16 <= int(mirrored.sum()) <= 48, int(mirrored.sum())


def test_gray_and_seeded() -> None:
    aug = GpuAugment(PP, gray_prob=1.0, seed=3)
    y = aug(_batch()) * torch.tensor(PP.std).view(1, 3, 1, 1) + torch.tensor(PP.mean).view(1, 3, 1, 1)
    assert float((y[:, 0] - y[:, 1]).abs().max()) <= 1e-5 and float((y[:, 1] - y[:, 2]).abs().max()) <= 1e-5
    a, b = GpuAugment(PP, seed=9), GpuAugment(PP, seed=9)
    x = _batch()
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), GpuAugment(PP, seed=10)(x))


def test_rejects_bad_input() -> None:
    aug = GpuAugment(PP)
    with pytest.raises(ValueError, match="uint8 N×H×W×3"):
        aug(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="uint8 N×H×W×3"):
        to_input(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)[0], PP)
    with pytest.raises(ValueError, match="scale"):
        GpuAugment(PP, scale=(1.2, 0.9))


def test_random_erasing_area_and_rate() -> None:
    """erase_prob=0.5, erase_area=(0.02, 0.2): ~half the samples lose one rectangle of 2-20 % of the image,
    filled with the dataset mean (0 after normalisation); the others are untouched."""
    aug = GpuAugment(PP, erase_prob=0.5, erase_area=(0.02, 0.2), seed=0)
    m = aug.erase_mask(2000, 48, 48)
    assert tuple(m.shape) == (2000, 1, 48, 48) and set(torch.unique(m).tolist()) <= {0.0, 1.0}
    frac = 1 - m.mean((1, 2, 3))
    erased = frac > 0
    assert abs(float(erased.float().mean()) - 0.5) < 0.05  # binomial sd 0.011
    # clamping to the image makes some rectangles smaller; none is larger than the upper area (+ rounding)
    assert 0.08 < float(frac[erased].mean()) < 0.13 and float(frac.max()) <= 0.2 + 2 * 48 / 48**2
    plain = GpuAugment(PP, seed=1, erase_prob=0.0)(_batch(4, 32))
    erasing = GpuAugment(PP, seed=1, erase_prob=1.0)(_batch(4, 32))
    zeroed = (erasing == 0).all(1) & ~(plain == 0).all(1)
    assert bool(zeroed.flatten(1).any(1).all()), "every sample must have an erased (zero) region at erase_prob=1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"erase_prob": 1.5}, "erase_prob=1.5"), ({"erase_area": (0.3, 0.1)}, "erase_area=(0.3, 0.1)")],
)
def test_random_erasing_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        GpuAugment(PP, **kwargs)


def test_similarity_fit_matches_the_runtime_alignment() -> None:
    """The batched closed form equals the runtime's Umeyama fit (to 1e-5) on noisy 5-point sets."""
    from edge_affect.data.augment import similarity_lstsq
    from edge_affect.runtime.align import similarity_transform

    rng = np.random.default_rng(3)
    src = rng.uniform(-1, 1, (4, 5, 2))
    dst = src @ np.array([[0.9, -0.2], [0.2, 0.9]]) + 0.1 + rng.normal(0, 0.02, src.shape)
    got = similarity_lstsq(torch.tensor(src, dtype=torch.float64), torch.tensor(dst, dtype=torch.float64)).numpy()
    for i in range(4):
        np.testing.assert_allclose(got[i], similarity_transform(src[i], dst[i]), atol=1e-5)


def test_landmark_jitter_moves_the_face_as_the_runtime_alignment_does() -> None:
    """Geometry, for 20 random 5-point faces and 2-px landmark noise at 112 px: a point of the photo appears in
    the augmented crop (the clean crop re-sampled through the similarity template → template + ε, grid
    coordinates) where ``align_face`` puts it when the landmarks are moved by ε (mapped back to the photo),
    within 0.01 px; the noise itself moves points by ~1.4 px."""
    from edge_affect.runtime.align import ARCFACE_TEMPLATE_112, similarity_transform

    def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
        return pts @ m[:, :2].T + m[:, 2]

    size, rng = 112, np.random.default_rng(0)
    to_px = np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5]])  # grid → crop pixels
    errs, moves = [], []
    for _ in range(20):
        # a face whose landmarks sit where the crop's template expects them (what the augmentation assumes of a
        # training crop; a crop whose own landmarks are off the template by ~1 px is misaligned by ≤ 0.3 px more)
        a = rng.uniform(0, np.pi / 8)
        rot = rng.uniform(1.5, 3) * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        face = ARCFACE_TEMPLATE_112 @ rot.T + rng.uniform(50, 300, 2)
        m0 = similarity_transform(face, ARCFACE_TEMPLATE_112)  # photo → clean crop (px)
        eps = rng.normal(0, 2.0, (5, 2))  # crop px
        moved = np.c_[apply(m0, face) + eps, np.ones(5)] @ np.vstack([*_inv(m0)]).T
        m = similarity_transform(moved, ARCFACE_TEMPLATE_112)  # photo → runtime crop from moved landmarks
        theta = GpuAugment(Preprocess(input_size=size)).misalignment(1, size, noise=torch.tensor(eps * 2 / size)[None])
        theta = theta[0].double().numpy()  # output grid → clean grid
        probe = rng.uniform(-1, 1, (50, 2)) * 80 + face.mean(0)  # photo points around the face
        clean_px = apply(m0, probe)
        # where the augmented crop shows them: theta(u) = clean point (grid) → u = theta⁻¹(...)
        clean_grid = (clean_px - (size / 2 - 0.5)) / (size / 2)
        u_grid = apply(_inv(theta), clean_grid)
        errs.append(np.abs(apply(to_px, u_grid) - apply(m, probe)).max())
        moves.append(np.linalg.norm(apply(m, probe) - clean_px, axis=1).mean())
    assert max(errs) < 0.01 and np.mean(moves) > 0.5, (max(errs), np.mean(moves))


def _inv(m: np.ndarray) -> np.ndarray:
    a = np.linalg.inv(m[:, :2])
    return np.c_[a, -a @ m[:, 2]]


def test_landmark_jitter_is_seeded_and_bounded() -> None:
    pp = Preprocess(input_size=32)
    kw = dict(scale=(1.0, 1.0), max_shift=0.0, max_rotate_deg=0.0, flip=False, brightness=0.0, contrast=0.0)
    a = GpuAugment(pp, landmark_jitter=0.02, gray_prob=0.0, seed=1, **kw)(_batch())
    b = GpuAugment(pp, landmark_jitter=0.02, gray_prob=0.0, seed=1, **kw)(_batch())
    c = GpuAugment(pp, gray_prob=0.0, seed=1, **kw)(_batch())
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="landmark_jitter"):
        GpuAugment(pp, landmark_jitter=0.5)


def test_pair_views_differ_by_landmark_noise_only() -> None:
    """``pair``: the same affine, colour and erasing for both views; only the second re-alignment differs. With
    landmark noise near 0 the two views are the same image; with a detector's noise they differ a little."""
    pp = Preprocess(input_size=32)
    kw = dict(scale=(0.9, 1.1), max_shift=0.1, max_rotate_deg=10.0, brightness=0.3, contrast=0.3, erase_prob=0.5)
    a, b = GpuAugment(pp, landmark_jitter=1e-7, gray_prob=0.5, seed=3, **kw).pair(_batch())
    assert a.shape == b.shape == (16, 3, 32, 32)
    assert float((a - b).abs().max()) < 1e-3
    a, b = GpuAugment(pp, landmark_jitter=0.02, gray_prob=0.5, seed=3, **kw).pair(_batch())
    d = (a - b).abs().mean((1, 2, 3))
    assert bool((d > 1e-3).all()) and float(d.mean()) < float((a - a.roll(1, 0)).abs().mean())
    with pytest.raises(ValueError, match="landmark_jitter > 0 or noise > 0"):
        GpuAugment(pp, seed=0).pair(_batch())


def _blur_only() -> tuple[Preprocess, dict]:
    """An identity normalisation and every other augmentation off, so that only the blur changes a face."""
    pp = Preprocess(input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    still = dict(scale=(1.0, 1.0), max_shift=0, max_rotate_deg=0, flip=False, brightness=0, contrast=0, gray_prob=0)
    return pp, still


def test_blur_is_a_gaussian_of_random_sigma_per_face() -> None:
    """``blur``: each face blurred by its own σ ~ U(0, blur) crop px, equal to OpenCV's Gaussian of that σ away
    from the edges; the mean is kept, and both views of a ``pair`` get the same σ."""
    import cv2

    pp, still = _blur_only()
    x = _batch()
    aug = GpuAugment(pp, blur=0.5, seed=5, **still)
    sigma = (torch.rand(16, generator=torch.Generator().manual_seed(5)) * 0.5).numpy()
    y = aug(x).numpy()
    src = to_input(x, pp).numpy()
    for i in range(16):
        ref = np.stack([cv2.GaussianBlur(src[i, c], (5, 5), float(sigma[i])) for c in range(3)])
        assert np.abs(y[i, :, 3:-3, 3:-3] - ref[:, 3:-3, 3:-3]).max() < 1e-5, (i, sigma[i])
    assert abs(float(y.mean()) - float(src.mean())) < 2e-3
    assert y.std() < src.std()  # random pixels lose contrast under any blur
    a, b = GpuAugment(pp, blur=0.5, landmark_jitter=1e-7, seed=5, **still).pair(x)
    assert float((a - b).abs().max()) < 1e-3
    with pytest.raises(ValueError, match="blur=2"):
        GpuAugment(pp, blur=2)


def test_blur_prob_blurs_only_that_share_of_the_faces() -> None:
    """``blur_prob``: each face is blurred (by the σ it would get with ``blur`` alone) with that probability and
    otherwise left exactly as it was; both views of a ``pair`` agree on it; 0 blurs nothing."""
    pp, still = _blur_only()
    x = _batch()
    src = to_input(x, pp).numpy()
    full = GpuAugment(pp, blur=0.5, seed=5, **still)(x).numpy()
    y = GpuAugment(pp, blur=0.5, blur_prob=0.5, seed=5, **still)(x).numpy()
    g = torch.Generator().manual_seed(5)
    torch.rand(16, generator=g)  # the σ draws
    blurred = (torch.rand(16, generator=g) < 0.5).numpy()
    assert 0 < blurred.sum() < 16  # this seed gives both kinds
    for i in range(16):
        ref = full[i] if blurred[i] else src[i]
        assert np.abs(y[i] - ref).max() < 1e-5, (i, bool(blurred[i]))
    a, b = GpuAugment(pp, blur=0.5, blur_prob=0.5, landmark_jitter=1e-7, seed=5, **still).pair(x)
    assert float((a - b).abs().max()) < 1e-3
    none = GpuAugment(pp, blur=0.5, blur_prob=0.0, seed=5, **still)(x).numpy()
    assert np.abs(none - src).max() < 1e-6
    with pytest.raises(ValueError, match="blur_prob=1.5"):
        GpuAugment(pp, blur=0.5, blur_prob=1.5)


def test_noise_is_gaussian_of_random_sigma_per_face() -> None:
    """``noise``: each face gets additive Gaussian pixel noise of its own σ ~ U(0, noise) of full scale (measured
    on mid-grey faces, where the [0, 1] clamp never bites), independent per pixel; both views of a ``pair`` get the
    same σ and each its own field (two frames' sensor noise); 0 adds nothing; a σ above 0.25 is refused."""
    pp, still = _blur_only()
    x = torch.full((64, 48, 48, 3), 128, dtype=torch.uint8)
    src = to_input(x, pp).numpy()
    y = GpuAugment(pp, noise=0.04, seed=7, **still)(x).numpy()
    sigma = (torch.rand(64, generator=torch.Generator().manual_seed(7)) * 0.04).numpy()
    d = y - src
    got = d.reshape(64, -1).std(1)
    assert np.allclose(got, sigma, rtol=0.05, atol=5e-4), np.c_[got, sigma][:5]
    assert np.abs(d.reshape(64, -1).mean(1)).max() < 3e-3  # zero-mean
    assert abs(float(np.corrcoef(d[:, 0, :, :-1].ravel(), d[:, 0, :, 1:].ravel())[0, 1])) < 0.02  # white
    a, b = GpuAugment(pp, noise=0.04, seed=7, **still).pair(x)  # one σ per face, a field per view
    assert np.allclose((a - b).numpy().reshape(64, -1).std(1), sigma * 2**0.5, rtol=0.05, atol=5e-4)
    assert np.array_equal(GpuAugment(pp, noise=0.0, seed=7, **still)(x).numpy(), src)
    gray = Preprocess(input_size=32, color="gray", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    g = GpuAugment(gray, noise=0.04, seed=7, **still)(x).numpy()
    assert np.array_equal(g[:, 0], g[:, 1]) and np.array_equal(g[:, 0], g[:, 2]) and np.abs(g - src).max() > 0.02
    with pytest.raises(ValueError, match="noise=0.3"):
        GpuAugment(pp, noise=0.3)
