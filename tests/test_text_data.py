"""Tests for the procedural Text image dataset."""

import numpy as np
import pytest

from tf_metainit.data import text


def test_same_seed_gives_identical_bytes():
  a = text.render_text_image(7, 'train', 64, seed=3)
  b = text.render_text_image(7, 'train', 64, seed=3)
  assert a.tobytes() == b.tobytes()


def test_image_does_not_depend_on_generation_order():
  batch = text.text_images('test', num_images=5, resolution=32, seed=1)
  alone = text.render_text_image(3, 'test', 32, seed=1)
  np.testing.assert_array_equal(batch[3], alone)
  later = text.text_images('test', num_images=2, resolution=32, seed=1,
                           start=3)
  np.testing.assert_array_equal(later[0], alone)


def test_different_seed_index_or_split_changes_image():
  base = text.render_text_image(0, 'train', 48, seed=0)
  for other in (text.render_text_image(0, 'train', 48, seed=1),
                text.render_text_image(1, 'train', 48, seed=0),
                text.render_text_image(0, 'test', 48, seed=0)):
    assert not np.array_equal(base, other)


def test_train_validation_and_test_strings_are_disjoint():
  train = text.text_strings('train', 2000, seed=0)
  test = text.text_strings('test', 2000, seed=0)
  validation = text.text_strings('validation', 300, seed=0)
  assert all(text.string_split(s) == 'train' for s in train)
  assert all(text.string_split(s) == 'test' for s in test)
  assert all(text.string_split(s) == 'validation' for s in validation)
  assert not set(train) & set(test)
  assert not (set(train) | set(test)) & set(validation)
  # The rule holds across seeds too, and strings are varied.
  assert not set(train) & set(text.text_strings('test', 1000, seed=5))
  assert len(set(train)) > 1950


def test_strings_use_the_charset_and_are_canonical():
  strings = text.text_strings('train', 500, seed=2)
  allowed = set(''.join(text._CHAR_GROUPS)) | {' ', '\n'}
  assert set(''.join(strings)) <= allowed
  for group in text._CHAR_GROUPS:  # Letters, digits and punctuation all used.
    assert set(''.join(strings)) & set(group)
  assert any('\n' in s for s in strings)
  assert len({len(s) for s in strings}) > 10
  for s in strings:
    for line in s.split('\n'):
      assert line and line == line.strip() and '  ' not in line


@pytest.mark.parametrize('resolution', [1, 17, 64, 100, 178])
def test_shape_range_dtype(resolution):
  images = text.text_images('train', 3, resolution, seed=0)
  assert images.shape == (3, resolution, resolution, 3)
  assert images.dtype == np.float32
  assert images.min() >= 0.0 and images.max() <= 1.0


@pytest.mark.parametrize('fonts', [None, ()], ids=['found', 'builtin'])
def test_images_are_not_blank(fonts):
  images = text.text_images('test', 40, 32, seed=4, fonts=fonts)
  for image in images:
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) >= 2
    assert np.ptp(image) > 0.2  # Text contrasts with the background.


def test_colors_have_contrast():
  rng = np.random.default_rng(0)
  for _ in range(300):
    fg, bg = text.random_colors(rng, min_contrast=0.4)
    assert abs(text._luma(np.array(fg)) - text._luma(np.array(bg))) >= 0.4


def test_same_content_across_resolutions():
  small = text.render_text_image(5, 'train', 32, seed=0)
  large = text.render_text_image(5, 'train', 128, seed=0)
  pooled = large.reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
  assert np.abs(pooled - small).mean() < 0.05


def test_find_fonts_skips_broken_files(tmp_path):
  fonts = text.find_fonts()
  if not fonts:
    pytest.skip('no fonts on this machine')
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'sub' / 'good.TTF').write_bytes(open(fonts[0], 'rb').read())
  (tmp_path / 'broken.ttf').write_bytes(b'not a font')
  (tmp_path / 'notes.txt').write_text('ignored')
  found = text.find_fonts((str(tmp_path),))
  assert found == (str(tmp_path / 'sub' / 'good.TTF'),)
  assert text.find_fonts((str(tmp_path / 'missing'),)) == ()


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match='split'):
    text.render_text_image(0, 'val')
  with pytest.raises(ValueError):
    text.render_text_image(-1)
