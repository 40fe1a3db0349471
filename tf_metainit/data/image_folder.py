"""Any folder of images as square float32 RGB arrays.

Every file is decoded with Pillow when the folder is loaded, so a corrupt file
fails there with its name rather than deep inside a tf.data iterator.
Conversion to RGB: grayscale is repeated over 3 channels; an alpha channel is
composited on white (transparent pixels become white, the NeRF/ShapeNet
convention); 16-bit grayscale is scaled by 1/65535; GIFs use their first frame.
"""

import os

import numpy as np
from PIL import Image
from PIL import ImageOps
import tensorflow as tf

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp')


def center_crop_resize(image, resolution=None):
  """Centre square crop of (H, W, C) [0, 1] image, resized with antialiasing.

  Works eagerly and inside tf.data. The crop keeps the central min(H, W)
  rows/columns (odd excess goes to the bottom/right); `resolution=None`
  keeps the cropped size. Bilinear antialiasing is a convex combination of
  pixels, but float rounding lifts white to 1.0000002, so the result is
  clipped back to [0, 1].
  """
  image = tf.convert_to_tensor(image)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  side = tf.minimum(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  image = image[top:top + side, left:left + side]
  if resolution is not None:
    image = tf.image.resize(image, (resolution, resolution),
                            method='bilinear', antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
  return image


def list_images(path, recursive=False):
  """Sorted image paths in folder `path`; raises with a fix if none."""
  if not os.path.isdir(path):
    what = 'is not a directory' if os.path.exists(path) else 'does not exist'
    raise FileNotFoundError(
        f'Image folder {path!r} {what}. Pass the path of an existing folder '
        'that contains the images.')
  if recursive:
    files = [os.path.join(root, f)
             for root, _, names in os.walk(path) for f in names]
  else:
    files = [os.path.join(path, f) for f in os.listdir(path)]
  images = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(f))
  if not images:
    hint = '' if recursive else (
        ' If the images are in subfolders, pass recursive=True.')
    raise ValueError(
        f'No images found in folder {path!r}. Accepted extensions '
        f'(case-insensitive): {", ".join(IMAGE_EXTENSIONS)}. Add image files '
        f'with one of these extensions or point to another folder.{hint}')
  return images


def _to_rgb_array(image):
  """Pillow image -> float32 (H, W, 3) in [0, 1] (see module doc)."""
  if image.mode in ('I', 'I;16', 'I;16B', 'I;16L'):
    gray = np.asarray(image, dtype=np.float32) / 65535.0
    return np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=-1)
  if image.mode == 'F':
    gray = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    return np.repeat(gray[..., None], 3, axis=-1)
  has_alpha = image.mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or (
      'transparency' in image.info)
  if has_alpha:
    image = image.convert('RGBA')
    white = Image.new('RGBA', image.size, (255, 255, 255, 255))
    image = Image.alpha_composite(white, image)
  return np.asarray(image.convert('RGB'), dtype=np.float32) / 255.0


def image_size(filename):
  """(height, width) of an image file as loaded (EXIF rotation applied), read from its
  header without decoding the pixels."""
  try:
    with Image.open(filename) as image:
      width, height = image.size
      orientation = image.getexif().get(0x0112, 1)  # 5-8: rotated by 90 degrees
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ValueError(
        f'Cannot decode image file {filename!r} ({type(e).__name__}: {e}). '
        'Replace it with a valid image.') from e
  return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def load_image(filename):
  """Decodes one file to float32 (H, W, 3) in [0, 1]; names it on failure."""
  try:
    with Image.open(filename) as image:
      image.seek(0)  # First frame of animated GIF/WebP.
      image.load()
      image = ImageOps.exif_transpose(image)  # Camera rotation tags.
      return _to_rgb_array(image)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ValueError(
        f'Cannot decode image file {filename!r} ({type(e).__name__}: {e}). '
        'Replace it with a valid image, or delete it or rename its extension '
        'so the folder loader skips it.') from e


def folder_images(path, resolution, max_images=None, recursive=False):
  """Float32 (N, resolution, resolution, 3) array of the folder's images.

  Args:
    path: folder of .png/.jpg/.jpeg/.bmp/.gif/.webp files (any case).
    resolution: output side in pixels, after a centre square crop.
    max_images: keep only the first `max_images` files in sorted order.
    recursive: also search subfolders.
  """
  if resolution is None or resolution < 1:
    raise ValueError(f'resolution must be a positive int, got {resolution}.')
  files = list_images(path, recursive)[:max_images]
  images = np.empty((len(files), resolution, resolution, 3), np.float32)
  for i, filename in enumerate(files):
    images[i] = center_crop_resize(load_image(filename), resolution).numpy()
  return images
