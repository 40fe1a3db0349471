"""Tests of the ellipse phantoms, their closed-form projections and readers."""

import math
import pickle

import numpy as np
import pytest

from tf_metainit.data import phantoms


def test_deterministic_per_split_and_index():
  a = phantoms.phantom_params(7, "validation", seed=3)
  np.testing.assert_array_equal(a, phantoms.phantom_params(7, "validation", 3))
  assert not np.array_equal(a, phantoms.phantom_params(8, "validation", 3))
  assert not np.array_equal(a, phantoms.phantom_params(7, "validation", 4))
  assert a.shape[1] == 6 and 3 <= len(a) <= phantoms.E_MAX
  with pytest.raises(ValueError, match="unknown split"):
    phantoms.phantom_params(0, "val")


def test_splits_are_disjoint():
  seen = {}
  for split in phantoms.SPLITS:
    for i in range(25):
      key = phantoms.phantom_params(i, split).tobytes()
      assert key not in seen, (split, i, seen.get(key))
      seen[key] = (split, i)
  images = {s: phantoms.phantom_arrays(s, 10, 16)["image"]
            for s in phantoms.SPLITS}
  for s1 in phantoms.SPLITS:
    for s2 in phantoms.SPLITS:
      if s1 < s2:
        diff = np.abs(images[s1][:, None] - images[s2][None]).max(axis=(2, 3))
        assert diff.min() > 0


def test_intensities_in_unit_interval():
  # Pixel-centre samples on a fine grid see slivers an average would blur.
  for i in range(40):
    ellipses = phantoms.phantom_params(i, "train")
    image = phantoms.rasterize(ellipses, 160, supersample=1)
    assert image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1, i
    # Every point is outside (0), in the skull wall (A0) or in the brain,
    # where the proven bounds hold.
    low, high = phantoms.intensity_bounds(ellipses)
    assert 0 <= low <= high <= 1
    tol = 1e-6
    ok = ((np.abs(image) < tol) | (np.abs(image - ellipses[0, 0]) < tol) |
          ((image > low - tol) & (image < high + tol)))
    assert np.all(ok), i
    assert image.max() > 0.5  # the skull is bright


def test_fit_intensities_uses_overlaps():
  head = [[1.0, 0.7, 0.9, 0, 0, 0], [-0.7, 0.65, 0.85, 0, 0, 0]]  # base 0.3
  # Three bright discs sharing the centre: 0.3 + 3 * 0.6 > 1 before fitting.
  stacked = np.array(head + [[0.6, 0.2, 0.2, 0, 0, 0]] * 3)
  fitted = phantoms.fit_intensities(stacked)
  assert phantoms.rasterize(stacked, 64).max() > 1
  image = phantoms.rasterize(fitted, 64, supersample=1)
  assert image.max() <= 1 and image.max() == pytest.approx(1, abs=1e-5)
  np.testing.assert_allclose(fitted[2:, 0], 0.7 / 3, rtol=1e-5)
  # Provably disjoint bright discs, and a dark one below the brain level:
  # only the dark one is scaled, to reach exactly 0 at its darkest.
  apart = np.array(head + [[0.6, 0.2, 0.2, -0.3, 0, 0],
                           [0.6, 0.2, 0.2, 0.3, 0, 0],
                           [-0.5, 0.1, 0.1, 0, 0.5, 0]])
  fitted = phantoms.fit_intensities(apart)
  np.testing.assert_array_equal(fitted[:4], apart[:4])
  assert fitted[4, 0] == pytest.approx(-0.3, rel=1e-5)
  low, high = phantoms.intensity_bounds(fitted)
  assert 0 <= low < 1e-5 and high == pytest.approx(0.9)
  image = phantoms.rasterize(fitted, 64, supersample=1)
  # Centres (row, col): dark disc (16, 32) (Y = +0.5 is up), bright disc (32, 42).
  assert 0 <= image[16, 32] < 1e-5 and image[32, 42] == pytest.approx(0.9)


def test_features_inside_brain_and_phantom_in_disc():
  rng = np.random.default_rng(0)
  for i in range(10):
    ellipses = phantoms.phantom_params(i, "test")
    skull, brain = ellipses[0], ellipses[1]
    for k in range(1, len(ellipses)):
      row, outer = ellipses[k], (skull if k == 1 else brain)
      # Boundary points of the ellipse must be inside the outer one.
      _, a, b, xc, yc, theta = row
      t = rng.uniform(0, 2 * np.pi, 500)
      th = np.deg2rad(theta)
      x = xc + a * np.cos(t) * np.cos(th) - b * np.sin(t) * np.sin(th)
      y = yc + a * np.cos(t) * np.sin(th) + b * np.sin(t) * np.cos(th)
      _, oa, ob, ox, oy, oth = outer
      oth = np.deg2rad(oth)
      u = (x - ox) * np.cos(oth) + (y - oy) * np.sin(oth)
      v = (x - ox) * np.sin(oth) - (y - oy) * np.cos(oth)
      assert np.all((u / oa) ** 2 + (v / ob) ** 2 < 1)
    t = np.linspace(0, 2 * np.pi, 2000)
    _, a, b, xc, yc, th = skull
    th = np.deg2rad(th)
    x = xc + a * np.cos(t) * np.cos(th) - b * np.sin(t) * np.sin(th)
    y = yc + a * np.cos(t) * np.sin(th) + b * np.sin(t) * np.cos(th)
    assert np.hypot(x, y).max() < phantoms.RADIUS


def test_rasterize_pixel_convention():
  # A disc of radius 0.4 (phantom frame, Y up) at (0.5, 0.5): normalised
  # centre (0.25, -0.25) -> pixel (row, col) = (H/4, 3W/4), radius 0.2 W pixels.
  disc = np.array([[0.7, 0.4, 0.4, 0.5, 0.5, 30.0]])
  image = phantoms.rasterize(disc, 32, supersample=1)
  rows, cols = np.mgrid[:32, :32]
  want = 0.7 * (((rows - 8) ** 2 + (cols - 24) ** 2) <= 6.4 ** 2)
  np.testing.assert_allclose(image, want, rtol=1e-6)
  # Supersampling approximates the pixel area covered.
  fine = phantoms.rasterize(disc, 32, supersample=8)
  assert fine.sum() * (2 / 32) ** 2 == pytest.approx(0.7 * math.pi * 0.4 ** 2,
                                                     rel=2e-3)
  # Rotated ellipse: axis a along (cos, sin) of theta in (X right, Y up),
  # so at 45 degrees it runs from the bottom-left to the top-right corner.
  ell = np.array([[1.0, 0.8, 0.1, 0.0, 0.0, 45.0]])
  image = phantoms.rasterize(ell, 64, supersample=1)
  assert image[16, 48] == 1 and image[48, 16] == 1 and image[16, 16] == 0


def test_unperturbed_ellipses_rasterise_as_the_textbook_phantom():
  # Pixel (r, c) is at X = 2 (c/W - 0.5), Y = -2 (r/H - 0.5). Hand-computed
  # at 128x128: (41, 64) is Y = +0.359, inside ellipse 5 (+0.1, centre
  # Y = +0.35) on the brain's 0.2; its mirror (86, 64), Y = -0.344, is brain
  # only; (102, 64), Y = -0.594, is the small disc at Y = -0.605 (+0.1).
  image = phantoms.rasterize(phantoms.SHEPP_LOGAN_MODIFIED, 128, supersample=1)
  assert image[41, 64] == pytest.approx(0.3)
  assert image[86, 64] == pytest.approx(0.2)
  assert image[102, 64] == pytest.approx(0.3)
  assert image[25, 64] == pytest.approx(0.2)  # its mirror: brain only


def test_unperturbed_ellipses_match_scikit_images_phantom():
  # scikit-image's 400x400 modified Shepp-Logan, rows and columns as it lays
  # them out. Measured mean absolute difference: 0.0063 (edge pixels, where
  # the two pixel-centre conventions differ by half a pixel); upside down
  # 0.044, mirrored left-right 0.016.
  data = pytest.importorskip("skimage.data")
  textbook = data.shepp_logan_phantom()
  ours = phantoms.rasterize(phantoms.SHEPP_LOGAN_MODIFIED, 400, supersample=1)
  assert np.abs(ours - textbook).mean() < 0.009
  assert np.abs(ours[::-1] - textbook).mean() > 0.03
  assert np.abs(ours[:, ::-1] - textbook).mean() > 0.012


def test_analytic_projection_against_numeric_line_integral():
  # Integrate the indicator along each ray by brute force: ray points
  # s n + y d in the normalised frame, spacing 1e-4, mapped to the phantom
  # frame (X, Y) = (2x, -2y).
  ellipse = np.array([[0.6, 0.5, 0.2, 0.1, -0.2, 25.0],
                      [-0.3, 0.1, 0.15, 0.05, -0.25, 70.0]])
  angles = [0.0, 0.7, 2.0]
  bins = 16
  got = phantoms.analytic_projection(ellipse, angles, bins)
  y = np.arange(-0.5, 0.5, 1e-4) + 5e-5
  for v, t in enumerate(angles):
    n = np.array([math.cos(t), math.sin(t)])
    d = np.array([-math.sin(t), math.cos(t)])
    for c in range(bins):
      s = c / bins - 0.5
      pts = 2 * (s * n[None] + y[:, None] * d[None]) * [1, -1]
      total = 0.
      for amp, a, b, xc, yc, theta in ellipse:
        th = np.deg2rad(theta)
        u = (pts[:, 0] - xc) * np.cos(th) + (pts[:, 1] - yc) * np.sin(th)
        w = (pts[:, 0] - xc) * np.sin(th) - (pts[:, 1] - yc) * np.cos(th)
        total += amp * np.sum((u / a) ** 2 + (w / b) ** 2 <= 1) * 1e-4
      assert got[v, c] == pytest.approx(total, abs=3e-4)
  # A centred unit-intensity disc of phantom radius 2R: chord 2 sqrt(R^2-s^2).
  disc = np.array([[1.0, 0.6, 0.6, 0.0, 0.0, 0.0]])
  s = np.arange(bins) / bins - 0.5
  want = 2 * np.sqrt(np.maximum(0.09 - s ** 2, 0))
  np.testing.assert_allclose(phantoms.analytic_projection(disc, [1.1], bins)[0],
                             want, atol=1e-12)
  # Zero padding rows are ignored.
  padded = np.concatenate([disc, np.zeros((3, 6))])
  np.testing.assert_array_equal(
      phantoms.analytic_projection(padded, [1.1], bins),
      phantoms.analytic_projection(disc, [1.1], bins))


def test_arrays_hold_images_and_padded_ellipses():
  arrays = phantoms.phantom_arrays("validation", 3, 24, seed=2)
  assert arrays["image"].shape == (3, 24, 24)
  assert arrays["ellipses"].shape == (3, phantoms.E_MAX, 6)
  for i in range(3):
    n = int(arrays["num_ellipses"][i])
    params = phantoms.phantom_params(i, "validation", seed=2)
    assert n == len(params)
    np.testing.assert_allclose(arrays["ellipses"][i, :n], params, rtol=1e-6)
    assert np.all(arrays["ellipses"][i, n:] == 0)


# ----------------------------------------------------------------------------
# Readers.


def _images(n, size=8):
  return np.random.default_rng(n).random((n, size, size)).astype(np.float32)


def test_load_npz(tmp_path):
  path = tmp_path / "ct.npz"
  np.savez(path, data_train=_images(3), data_test=_images(2)[:, None])
  data = phantoms.load_npz(path)
  assert data["data_train"].shape == (3, 8, 8)
  assert data["data_test"].shape == (2, 8, 8)  # singleton axis squeezed
  np.testing.assert_array_equal(data["data_train"], _images(3))

  with pytest.raises(FileNotFoundError, match="does not exist"):
    phantoms.load_npz(tmp_path / "missing.npz")
  np.savez(path, data_train=_images(3))
  with pytest.raises(ValueError, match=r"lacks \['data_test'\]"):
    phantoms.load_npz(path)
  np.savez(path, data_train=_images(3), data_test=_images(2) * 3)
  with pytest.raises(ValueError, match=r"expected finite values in \[0, 1\]"):
    phantoms.load_npz(path)
  np.savez(path, data_train=_images(3)[0], data_test=_images(2))
  with pytest.raises(ValueError, match=r"shape \(8, 8\)"):
    phantoms.load_npz(path)
  np.savez(path, data_train=(_images(3) * 255).astype(np.uint8),
           data_test=_images(2))
  with pytest.raises(TypeError, match="dtype uint8"):
    phantoms.load_npz(path)
  np.savez(path, data_train=_images(3), data_test=_images(2, size=6))
  with pytest.raises(ValueError, match="share one resolution"):
    phantoms.load_npz(path)


def test_load_reference_pickle(tmp_path):
  path = tmp_path / "ct_256.pkl"
  with open(path, "wb") as f:
    # As the reference indexes it, data may carry a singleton axis.
    pickle.dump({"data_train": _images(4)[:, None].astype(np.float64),
                 "data_test": _images(2)}, f)
  with pytest.raises(ValueError, match="allow_pickle=True"):
    phantoms.load_reference_pickle(path)
  data = phantoms.load_reference_pickle(path, allow_pickle=True)
  assert data["data_train"].shape == (4, 8, 8)
  assert data["data_train"].dtype == np.float32
  assert data["data_test"].shape == (2, 8, 8)

  with pytest.raises(FileNotFoundError, match="does not exist"):
    phantoms.load_reference_pickle(tmp_path / "nope.pkl", allow_pickle=True)
  for bad, message in [([_images(4), _images(2)], "holds a list"),
                       ({"train": _images(4)}, "lacks"),
                       ({"data_train": _images(4)[..., 0],
                         "data_test": _images(2)}, r"shape \(4, 8\)"),
                       ({"data_train": -_images(4), "data_test": _images(2)},
                        r"\[0, 1\]")]:
    with open(path, "wb") as f:
      pickle.dump(bad, f)
    with pytest.raises(ValueError, match=message):
      phantoms.load_reference_pickle(path, allow_pickle=True)
