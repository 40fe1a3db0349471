"""Volume rendering against closed forms and gradients."""

import numpy as np
import pytest
import tensorflow as tf

from tf_metainit.physics import volume

SLAB_COLOUR = np.array([0.2, 0.5, 0.9])


def _slab(dtype, sigma, first, last, num_samples=33, near=2.0, far=6.0):
  """Samples [first, last) carry `sigma`, so the slab is (last - first) bins."""
  z = np.linspace(near, far, num_samples)
  density = np.zeros(num_samples)
  density[first:last] = sigma
  rgb = np.tile(SLAB_COLOUR, (num_samples, 1))
  thickness = z[last] - z[first]
  return (tf.constant(rgb, dtype), tf.constant(density, dtype),
          tf.constant(z, dtype), thickness)


@pytest.mark.parametrize('dtype, tol', [(tf.float64, 1e-9),
                                        (tf.float32, 2e-6)])
@pytest.mark.parametrize('sigma', [0.0, 0.3, 2.0, 40.0])
@pytest.mark.parametrize('white', [True, False])
def test_homogeneous_slab_matches_beer_lambert(dtype, tol, sigma, white):
  rgb, density, z, thickness = _slab(dtype, sigma, 8, 20)
  out = volume.volume_render(rgb, density, z, white_background=white)
  transmittance = np.exp(-sigma * thickness)
  np.testing.assert_allclose(out['acc'], 1 - transmittance, atol=tol)
  background = 1.0 if white else 0.0
  expected = SLAB_COLOUR * (1 - transmittance) + background * transmittance
  np.testing.assert_allclose(out['rgb'], expected, atol=tol)
  np.testing.assert_allclose(np.sum(out['weights']), out['acc'], atol=tol)


def test_batched_slabs_and_shared_z():
  rays = [_slab(tf.float64, s, a, b) for s, a, b in
          [(1.0, 0, 4), (0.5, 10, 30), (3.0, 31, 32)]]
  rgb = tf.stack([r[0] for r in rays])
  density = tf.stack([r[1] for r in rays])
  out = volume.volume_render(rgb, density, rays[0][2])  # (N,) broadcast.
  expected = [1 - np.exp(-s * r[3]) for s, r in zip([1.0, 0.5, 3.0], rays)]
  np.testing.assert_allclose(out['acc'], expected, atol=1e-9)
  assert out['rgb'].shape == (3, 3) and out['weights'].shape == (3, 33)


def test_opaque_surface_depth_and_last_delta():
  z = tf.constant(np.linspace(2.0, 6.0, 9))
  density = tf.constant([0, 0, 0, 1e6, 1e6, 0, 0, 0, 0], tf.float64)
  rgb = tf.ones([9, 3], tf.float64) * 0.25
  out = volume.volume_render(rgb, density, z)
  np.testing.assert_allclose(out['depth'], 3.5, atol=1e-9)
  np.testing.assert_allclose(out['rgb'], [0.25] * 3, atol=1e-9)
  # Density only in the last sample: its interval is `last_delta` long.
  last = tf.one_hot(8, 9, dtype=tf.float64) * 10.0
  shapenet = volume.volume_render(rgb, last, z, last_delta=1e-3)
  np.testing.assert_allclose(shapenet['acc'], 1 - np.exp(-10.0 * 1e-3))
  photo = volume.volume_render(rgb, last, z, last_delta=1e10,
                               white_background=False)
  np.testing.assert_allclose(photo['acc'], 1.0)
  np.testing.assert_allclose(photo['rgb'], [0.25] * 3)


@pytest.mark.parametrize('white', [True, False])
def test_gradients_match_finite_differences(white):
  rng = np.random.default_rng(0)
  num_samples = 12
  z = tf.constant(np.sort(rng.uniform(2, 6, (2, num_samples)), axis=-1))
  sigma = tf.constant(rng.uniform(0.05, 3.0, (2, num_samples)))
  rgb = tf.constant(rng.uniform(0, 1, (2, num_samples, 3)))

  def render(s, c):
    out = volume.volume_render(c, s, z, white_background=white)
    return tf.concat([out['rgb'], out['acc'][:, None],
                      out['depth'][:, None]], axis=-1)

  theoretical, numerical = tf.test.compute_gradient(render, [sigma, rgb],
                                                    delta=1e-6)
  for t, n in zip(theoretical, numerical):
    np.testing.assert_allclose(t, n, atol=1e-6)
