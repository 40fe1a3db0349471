"""CelebA and Imagenette from TFDS as float32 (H, W, 3) images in [0, 1].

CelebA follows the reference notebook: 218x178 uint8 -> /255 -> rows 20:198
(all 178 columns) -> 178x178. Imagenette images vary in size, so they are
centre-cropped to a square (the reference's preprocessing is not public).
Both are then resized with antialiasing when `resolution` is given; with
`resolution=None` both come out at the paper's 178x178.
"""

import tensorflow as tf
import tensorflow_datasets as tfds

from tf_metainit.data import image_folder

PAPER_RESOLUTION = 178
_CELEBA_ROWS = (20, 198)  # Central 178 of 218 rows, as the reference.


def celeba_crop(image):
  """uint8 (218, 178, 3) CelebA image -> float32 (178, 178, 3) in [0, 1]."""
  image = tf.ensure_shape(image, (218, 178, 3))
  image = tf.cast(image, tf.float32) / 255.0
  return image[_CELEBA_ROWS[0]:_CELEBA_ROWS[1], :178]


def celeba_preprocess(image, resolution=None):
  image = celeba_crop(image)
  if resolution is not None and resolution != PAPER_RESOLUTION:
    image = image_folder.center_crop_resize(image, resolution)
  return image


def imagenette_preprocess(image, resolution=None):
  image = tf.cast(image, tf.float32) / 255.0
  resolution = resolution or PAPER_RESOLUTION
  image = image_folder.center_crop_resize(image, resolution)
  return tf.ensure_shape(image, (resolution, resolution, 3))


PREPROCESS = {
    'celeb_a': celeba_preprocess,
    'imagenette': imagenette_preprocess,
}


def tfds_dataset(name, split, resolution=None, data_dir=None,
                 shuffle_files=False, download=False):
  """tf.data.Dataset of float32 (H, W, 3) images in [0, 1] from TFDS.

  Args:
    name: 'celeb_a' or 'imagenette', optionally with a TFDS config/version
      such as 'imagenette/320px-v2' or 'celeb_a:2.1.0'.
    split: TFDS split string, e.g. 'train', 'test', 'train[:10000]' (the
      paper used 10,000 images per dataset).
    resolution: output side; None keeps the paper's 178.
    data_dir: TFDS data directory (None = TFDS default).
    shuffle_files: shuffle the order of the TFDS shards.
    download: let TFDS download and prepare missing data (needs network;
      CelebA's source may need a manual download, see the TFDS catalog).
      Off, data not prepared in data_dir is a FileNotFoundError.
  """
  base = name.split('/')[0].split(':')[0]
  if base not in PREPROCESS:
    raise ValueError(
        f'Unknown TFDS image dataset {name!r}. Known datasets: '
        f'{sorted(PREPROCESS)}; use a folder of images '
        '(tf_metainit.data.image_folder) for anything else.')
  preprocess = PREPROCESS[base]
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir,
                   shuffle_files=shuffle_files, download=download)
  except AssertionError as e:  # TFDS's error for data it has not prepared.
    if download:
      raise
    raise FileNotFoundError(
        f'TFDS dataset {name!r} is not prepared in data_dir '
        f'{data_dir or tfds.core.constants.DATA_DIR}; bind '
        'ImageRegression.download = True to let TFDS download it (needs '
        'network), or set ImageRegression.data_dir to where it is.') from e
  return ds.map(lambda example: preprocess(example['image'], resolution),
                num_parallel_calls=tf.data.AUTOTUNE)
