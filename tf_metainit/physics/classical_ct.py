"""Classical sparse-view CT reconstructions: the rows beside the learned inits.

Filtered back-projection (`skimage.transform.iradon`) and SART
(`skimage.transform.iradon_sart`), through scikit-image: an optional extra
(pip install 'tf_metainit[classical]'), never a core dependency.

Geometry. scikit-image's `radon` at angle -t (degrees) sums the rows of the image
rotated the way our projector (ct.py, bilinear) rotates its sample grid at
t (radians), about the same centre pixel (W/2, W/2); our projections are the mean
over the H samples of a ray instead of their sum. So for an H x W image

    skimage radon(image, theta=-degrees(t)).T == W * ct.project(image, t)

(measured equal to 1e-6 relative at 64x64, tests/test_classical_ct.py), and its
inverses see exactly the measurements the learned inits are fitted to.

Both reconstructions are clipped to [0, 1], the range of the phantoms and of the
fields' sigmoid output.
"""

import numpy as np

METHODS = ("fbp", "sart")


def _transform():
  try:
    from skimage import transform  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("Classical CT reconstructions (FBP, SART) need scikit-image: "
                      "pip install 'tf_metainit[classical]'.") from e
  return transform


def _skimage_measurements(sinogram, angles):
  """(sinogram (W, V) in skimage's units, theta in degrees) of ours ((V, W), rad)."""
  sinogram = np.asarray(sinogram, dtype=np.float64)
  angles = np.asarray(angles, dtype=np.float64).reshape(-1)
  if sinogram.ndim != 2 or sinogram.shape[0] != angles.size:
    raise ValueError(f"sinogram must be [num_views, bins] with one row per angle; got "
                     f"{sinogram.shape} for {angles.size} angles.")
  return sinogram.T * sinogram.shape[1], -np.rad2deg(angles)


def fbp(sinogram, angles, filter_name="ramp"):
  """Filtered back-projection of sinogram [V, W] at angles [V] (radians): [W, W]."""
  sino, theta = _skimage_measurements(sinogram, angles)
  image = _transform().iradon(sino, theta=theta, output_size=sino.shape[0],
                              filter_name=filter_name, circle=True)
  return np.clip(image, 0, 1).astype(np.float32)


def sart(sinogram, angles, iterations=100, relaxation=0.5):
  """SART of sinogram [V, W] at angles [V] (radians), each pass clipped to [0, 1].

  Relaxation 0.5: on 8 validation phantoms at 64x64 it converges at every view count
  (1.0 diverges from 4 views on, scikit-image's default 0.15 is slower to reach the
  same PSNR).
  """
  if int(iterations) < 1:
    raise ValueError(f"SART iterations must be at least 1, got {iterations}.")
  sino, theta = _skimage_measurements(sinogram, angles)
  transform = _transform()
  image = None
  for _ in range(int(iterations)):
    image = transform.iradon_sart(sino, theta=theta, image=image,
                                  relaxation=relaxation, clip=(0, 1))
  return image.astype(np.float32)


def reconstruct(method, sinograms, angles, **settings):
  """[B, W, W] reconstructions of sinograms [B, V, W] at angles [B, V] by method."""
  if method not in METHODS:
    raise ValueError(f"unknown classical CT method {method!r}; use one of {METHODS}.")
  fn = fbp if method == "fbp" else sart
  return np.stack([fn(s, a, **settings) for s, a in zip(np.asarray(sinograms),
                                                        np.asarray(angles))])


def describe(method, **settings):
  """The table's name for a method and its settings, e.g. 'SART, 100 iterations'."""
  if method == "fbp":
    return f"FBP, {settings.get('filter_name', 'ramp')} filter"
  passes = int(settings.get("iterations", 100))
  return (f"SART, {passes} iteration{'' if passes == 1 else 's'}, relaxation "
          f"{settings.get('relaxation', 0.5):g}")
