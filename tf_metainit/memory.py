"""Memory a fit will need, checked before it starts: a fit too large for this machine
is refused with the size it needs, not killed by the kernel half-way.

The estimate is TensorFlow's own footprint, the bytes every pixel costs across the
fit's arrays (the decoded image, its float copy, the constant the compiled fit holds,
the coordinates, the render and its PNG), and one chunk's activations
(fields/chunked.py). Checked once against a measured peak: `tf-metainit-fit
--init=natural` on a 2000x2000 RGB photo (4 megapixels, 2 steps, the export and PNGs
written) peaked at 1887 MiB RSS; the estimate says 2026 MiB, 7% above.
"""

import os

BASE_BYTES = 700 << 20          # TensorFlow, the field and the compiled fit
BYTES_PER_PIXEL = 96            # the fit's image-sized arrays, RGB float32
ACTIVATION_BYTES = 4 * 6        # float32 kept per unit of width per chunk point


def available_bytes():
  """Memory this process may still take: the least of the kernel's MemAvailable, what a
  cgroup limit leaves and TF_METAINIT_MEMORY_LIMIT (bytes, e.g. '2e9': to leave room
  for other work); None when none can be read."""
  figures = []
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          figures.append(int(line.split()[1]) * 1024)
  except OSError:
    pass
  for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                       ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                        "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
    try:
      with open(limit) as f, open(usage) as g:
        text = f.read().strip()
        if text != "max" and int(text) < (1 << 60):
          figures.append(int(text) - int(g.read()))
    except (OSError, ValueError):
      continue
  if os.environ.get("TF_METAINIT_MEMORY_LIMIT"):
    figures.append(int(float(os.environ["TF_METAINIT_MEMORY_LIMIT"])))
  return min(figures) if figures else None


def _fixed_bytes(field, chunk):
  """What a fit costs whatever its size: TensorFlow and one chunk's activations."""
  description = field.describe()
  units = description.get("width", 256) * description.get("depth", 5)
  return BASE_BYTES + ACTIVATION_BYTES * units * chunk


def image_fit_bytes(height, width, field, chunk, count=1):
  """Estimated peak bytes of fitting `count` H x W images at once (a batch of
  per-signal weights) with `field` (its description gives width and depth), each in
  chunks of `chunk` pixels."""
  pixels = height * width
  return (_fixed_bytes(field, count * min(chunk, pixels))
          + BYTES_PER_PIXEL * count * pixels)


def images_per_batch(height, width, field, chunk, largest=32, share=0.5,
                     available=None):
  """The most H x W images (at most `largest`) fitted at once whose estimated peak
  takes at most `share` of the memory available (at least 1)."""
  available = available_bytes() if available is None else available
  count = largest
  while count > 1 and available is not None and (
      image_fit_bytes(height, width, field, chunk, count) > share * available):
    count //= 2
  return count


def gigabytes(nbytes):
  return f"{nbytes / (1 << 30):.1f} GB"


def check_image_fit(height, width, field, chunk, available=None, count=1):
  """The estimated peak bytes of fitting `count` H x W images at once; refuses, in one
  line, a fit that would not fit in memory (`available`: bytes, default
  available_bytes())."""
  available = available_bytes() if available is None else available
  needed = image_fit_bytes(height, width, field, chunk, count)
  if available is None or needed <= available:
    return needed
  what = (f"Fitting this {height}x{width} image" if count == 1 else
          f"Fitting {count} {height}x{width} images at once")
  if count > 1:
    fix = "give a smaller --batch"
  else:
    room = max(available - _fixed_bytes(field, chunk), 0)
    scale = min((room / BYTES_PER_PIXEL / (height * width)) ** 0.5, 1.0)
    fix = f"downsample it to about {int(height * scale)}x{int(width * scale)} or less"
  raise MemoryError(
      f"{what} needs about {gigabytes(needed)} of memory and {gigabytes(available)} is "
      f"available: {fix}, or free memory, and run again.")
