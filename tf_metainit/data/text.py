"""Procedural "Text" image dataset: random strings rendered with Pillow.

The paper's third image set is rendered text; its generator is not public, so
this is a re-creation. Every image is a pure function of
(split, index, resolution, seed, fonts): its parameters come from a numpy
Generator seeded with SeedSequence([seed, split_id, index]), so any image can
be rendered alone, in any order, by any worker.

Disjointness rule: a string belongs to the split its BLAKE2b digest gives:
the lowest bit of byte 0 set -> 'test'; else byte 1 divisible by 8 ->
'validation' (1/16 of all strings, carved from the training half so the test
strings stayed what they were), else 'train'. Each split redraws a string until
the rule assigns it to that split, so no string is ever shared between the
splits, whatever the seeds or indices (expected 2.3, 2 and 16 draws per train,
test and validation image).

Layout is in units of the image side, and glyphs are rendered at
`supersample` x the requested resolution then box-averaged down, so the same
index gives the same picture at every resolution. Images depend on the fonts
found on the machine (sorted paths); pass `fonts` explicitly to pin them.
"""

import functools
import hashlib
import os
import string

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from tf_metainit import checks
from tf_metainit.data import procedural

SPLITS = ('train', 'test', 'validation')  # the order gives the seed's split id
FONT_DIRS = (
    '/usr/share/fonts',
    '/usr/local/share/fonts',
    '~/.fonts',
    '~/.local/share/fonts',
    '/Library/Fonts',
    '/System/Library/Fonts',
    'C:/Windows/Fonts',
)
FONT_EXTENSIONS = ('.ttf', '.otf')
# Letters dominate as in real text; digits and punctuation add variety.
_CHAR_GROUPS = (string.ascii_letters, string.digits, string.punctuation)
_CHAR_GROUP_PROBS = (0.75, 0.15, 0.10)
_CHAR_GROUP_CUTS = np.cumsum(_CHAR_GROUP_PROBS)[:-1]  # Last group: the rest.


def string_split(text):
  """Returns the only split ('train', 'validation' or 'test') that may contain
  `text`."""
  digest = hashlib.blake2b(text.encode('utf-8'), digest_size=8).digest()
  if digest[0] & 1:
    return 'test'
  return 'validation' if digest[1] % 8 == 0 else 'train'


def _split_id(split):
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; use one of {SPLITS}.')
  return SPLITS.index(split)


def _usable_font(path):
  """True if the font draws distinct, non-empty glyphs for ASCII."""
  try:
    font = ImageFont.truetype(path, 32, layout_engine=ImageFont.Layout.BASIC)
    masks = [bytes(font.getmask(c)) for c in 'Ag7?']
  except (OSError, ValueError):
    return False
  # Symbol/math fonts map ASCII to .notdef boxes or nothing at all.
  return all(any(m) for m in masks) and len(set(masks)) == len(masks)


@functools.lru_cache(maxsize=None)
def find_fonts(font_dirs=FONT_DIRS):
  """Sorted paths of usable .ttf/.otf fonts under `font_dirs` (recursive)."""
  paths = []
  for font_dir in font_dirs:
    font_dir = os.path.expanduser(font_dir)
    for root, _, files in os.walk(font_dir):
      paths += [os.path.join(root, f) for f in files
                if f.lower().endswith(FONT_EXTENSIONS)]
  return tuple(p for p in sorted(paths) if _usable_font(p))


@functools.lru_cache(maxsize=512)
def _load_font(path, size):
  if path is None:  # Pillow's built-in scalable font: works without fonts.
    return ImageFont.load_default(size=size)
  return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


def _random_word(rng, max_len):
  length = rng.integers(1, max_len + 1)
  groups = np.searchsorted(_CHAR_GROUP_CUTS, rng.random(length), 'right')
  picks = rng.random(length)  # One vectorised draw: per-char calls are slow.
  return ''.join(_CHAR_GROUPS[g][int(u * len(_CHAR_GROUPS[g]))]
                 for g, u in zip(groups, picks))


def random_string(rng, max_lines=3, max_words=3, max_word_len=8):
  """Words of random characters, single-spaced, on 1..max_lines lines.

  No leading, trailing or doubled whitespace, so distinct strings render
  differently and the split rule cannot be dodged by invisible changes.
  """
  num_lines = rng.integers(1, max_lines + 1)
  return '\n'.join(
      ' '.join(_random_word(rng, max_word_len)
               for _ in range(rng.integers(1, max_words + 1)))
      for _ in range(num_lines))


def _image_rng(split, index, seed):
  """The Generator behind one image: independent of every other image."""
  return np.random.default_rng(
      np.random.SeedSequence([seed, _split_id(split), index]))


def _split_string(rng, split):
  """Draws strings until one belongs to `split` (the disjointness rule)."""
  text = random_string(rng)
  while string_split(text) != split:
    text = random_string(rng)
  return text


def _luma(rgb):
  return np.dot(rgb, (0.299, 0.587, 0.114)) / 255.0


def random_colors(rng, min_contrast=0.4, max_tries=100):
  """(text, background) uint8 RGB whose luma differs by >= min_contrast."""
  background = rng.integers(0, 256, size=3)
  for _ in range(max_tries):
    text = rng.integers(0, 256, size=3)
    if abs(_luma(text) - _luma(background)) >= min_contrast:
      return tuple(text.tolist()), tuple(background.tolist())
  # Black or white is always >= 0.5 away from a mid-grey background.
  text = (0, 0, 0) if _luma(background) >= 0.5 else (255, 255, 255)
  return text, tuple(background.tolist())


def _offset(rng, text_len, image_len, max_cut):
  """Random start so that >= (1 - max_cut) of min(text, image) is visible."""
  margin = max_cut * min(text_len, image_len)
  low = min(0, image_len - text_len) - margin
  high = max(0, image_len - text_len) + margin
  return rng.uniform(low, high)


def render_text_image(index, split='train', resolution=64, seed=0,
                      fonts=None, font_size_range=(0.12, 0.4),
                      max_cut=0.2, supersample=2):
  """Renders text image `index` of `split` as float32 (H, W, 3) in [0, 1].

  Args:
    index: non-negative image index within the split.
    split: 'train', 'validation' or 'test'; their strings are disjoint (see
      module doc).
    resolution: output side in pixels (any positive int).
    seed: dataset seed; a different seed gives a different dataset.
    fonts: font paths to draw from; None = `find_fonts()`, and an empty
      sequence (or no fonts found) = Pillow's built-in default font.
    font_size_range: font size range as a fraction of the image side.
    max_cut: at most this fraction of the text block (per axis) may fall
      outside the image, like the paper's crops.
    supersample: render at this multiple of `resolution`, then box-average,
      for antialiasing that does not depend on the resolution.
  """
  checks.image_request(index, seed, resolution)
  rng = _image_rng(split, index, seed)
  text = _split_string(rng, split)
  fonts = find_fonts() if fonts is None else tuple(fonts)
  font_path = fonts[rng.integers(len(fonts))] if fonts else None
  text_color, background = random_colors(rng)

  side = resolution * supersample
  size = max(1, round(rng.uniform(*font_size_range) * side))
  font = _load_font(font_path, size)
  align = ('left', 'center', 'right')[rng.integers(3)]
  spacing = round(rng.uniform(0.0, 0.3) * size)
  image = Image.new('RGB', (side, side), background)
  draw = ImageDraw.Draw(image)
  left, top, right, bottom = draw.multiline_textbbox(
      (0, 0), text, font=font, spacing=spacing, align=align)
  x = _offset(rng, right - left, side, max_cut) - left
  y = _offset(rng, bottom - top, side, max_cut) - top
  draw.multiline_text((x, y), text, fill=text_color, font=font,
                      spacing=spacing, align=align)
  if supersample > 1:
    image = image.reduce(supersample)
  return np.asarray(image, dtype=np.float32) / 255.0


def text_strings(split='train', num_images=100, seed=0, start=0):
  """The strings of images start..start+num_images-1 (for checks/debug)."""
  return [_split_string(_image_rng(split, i, seed), split)
          for i in range(start, start + num_images)]


def text_images(split='train', num_images=1000, resolution=64, seed=0,
                start=0, **render_kwargs):
  """Images start..start+num_images-1 as float32 (N, H, W, 3) in memory."""
  return procedural.images(render_text_image, split, num_images, resolution, seed, start,
                           **render_kwargs)
