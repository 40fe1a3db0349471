"""Held-out real CT and MR slices (real anatomy, no phantoms) for real_anatomy.py.

  python docs/ct/real_slices.py --out=/work/shared/anatomy/real_slices.npz \
      [--contact=/work/shared/anatomy/contact.png] [--mirrors=/work/.mirror]

Each slice in SOURCES is read from a local mirror of its public repository (the bare
git directory <mirrors>/<owner>+<name>/repo that the session tool `fetch
github:owner/name` brings) at the pinned commit; s1045 is read from the installed
matplotlib's sample data and checked by its sha256. Nothing is downloaded: a missing
mirror is reported with the fetch to run.

Per slice:
  1. the 2-D slice (a multi-frame file's middle frame unless SOURCES names a frame),
     as float in the file's units (DICOM rescale slope and intercept applied, so CT
     is in HU);
  2. CT only: values below -1024 HU set to -1024 (the scanner's padding outside the
     reconstruction circle, -2000 or -3024, is not tissue: it becomes air);
  3. cropped to a centred square (the longer side is cut);
  4. normalised to [0, 1]: (x - p0.5) / (p99.5 - p0.5) clipped to [0, 1], where p0.5
     and p99.5 are the 0.5 and 99.5 percentiles of the cropped slice;
  5. resized to 256x256: area (box) averaging down, bilinear up. Only pydicom's
     128x128 CT_small is upsampled (bilinear, x2).

Writes the .npz (image (N, 256, 256) float32 in [0, 1]; name (N,), e.g. 'CT chest
(fo-dicom ct.dcm)'; modality (N,) 'CT'/'MR'; source (N,) 'repo@commit:path'), and
SOURCES.md beside it; with --contact, a PNG sheet of the slices. The slices are not
shipped with this repository: their terms are not all ours to pass on (SOURCES.md
lists each one's, as read from its repository).

DICOM is parsed here (no pydicom): uncompressed little-endian, explicit or implicit VR,
with or without the preamble and file meta header; compressed and big-endian transfer
syntaxes are refused.
"""

import argparse
import gzip
import hashlib
import os
import struct
import subprocess
import sys

import numpy as np

SIZE = 256
HU_AIR = -1024.0

# One slice each, head to foot within a modality; terms as read in each repository.
# Surveyed and left out (2026-12): fo-dicom CT-MONO2-16-ankle (a 3-D rendering with
# text, not a slice), GH342 (a CT scout projection), CR-MONO1-10-chest (radiograph),
# GH1728 (a derived sagittal secondary capture); dwv gdcm-CT-MONO2-8-abdo (8-bit
# display capture with burned-in text), dicompyler-ct.0 (mostly empty: top slice and
# couch); imageio-binaries dicom_file01 (a CT phantom), stent.npz (thresholded, most
# pixels 0); pydicom MR_small (64x64); pyradiomics breast1 (a 45x120 crop); every
# JPEG / JPEG 2000 / RLE file (compressed). Real, usable, not taken (regions already
# here): dwv bbmri-53323419 (sagittal head), fo-dicom GH1308 (lumbar CT) and
# GH177_D_CLUNIE_CT1 (the full scan CT_small was cut from), DICOMSamples
# MR_Implicit_Little (axial head at the skull base).
SOURCES = [
    dict(modality="CT", region="head", label="DICOMSamples CT-MONO2-16-brain",
         repo="notZaki/DICOMSamples", commit="cc8b6fc9c0e8255edac2ad61191f3ddbe6c681ae",
         path="DICOMSamples/CT_Explicit_Little.dcm",
         terms="No licence file in the repository; its readme.md says the file is "
               "CT-MONO2-16-brain from Barre's collection (barre.dev/medical/samples), "
               "kept to test DICOM.jl."),
    dict(modality="CT", region="chest", label="fo-dicom ct.dcm",
         repo="fo-dicom/fo-dicom", commit="1b92c5980a06a1906f4fbb362b4234b9003949de",
         path="Tests/FO-DICOM.Benchmark/Data/ct.dcm",
         terms="Repository under the Microsoft Public License (License.txt); no "
               "separate terms or origin given for its test data (study 'CHEST', "
               "series 'HELICAL CHEST')."),
    dict(modality="CT", region="heart", label="dwv osirix-goudurix",
         repo="ivmartel/dwv", commit="ff7cfdab1a31ed253a484565123eac9b39d14698",
         path="tests/data/osirix-goudurix.dcm",
         terms="Repository under GPL-3.0 (license.txt); tests/data/readme.md gives the "
               "origin: OsiriX sample datasets (GOUDURIX, coronary CTA)."),
    dict(modality="CT", region="thoracic spine", label="pydicom CT_small",
         repo="pydicom/pydicom", commit="fb1f24e4f0418008757766d8e79ec92dc2ab9855",
         path="src/pydicom/data/test_files/CT_small.dcm",
         terms="Repository under MIT (LICENSE); test_files/README.txt: downsized to "
               "128x128 from NEMA WG04 'CT1_UNC', and 'I believe there is no "
               "restriction on using any of these files in this manner'."),
    dict(modality="CT", region="upper abdomen", label="dcmqi ct-3slice/02",
         repo="QIICR/dcmqi", commit="b6137d9ee8cf6cd6c074fe27d1af26a30b578753",
         path="data/segmentations/ct-3slice/02.dcm",
         terms="Repository under a BSD 3-clause licence (LICENSE.txt, Brigham and "
               "Women's Hospital); no separate terms or origin given for its test "
               "data. The middle file of a 3-slice test series."),
    dict(modality="CT", region="lumbar spine",
         label="DICOMSamples CT-MONO2-12-lomb-an2",
         repo="notZaki/DICOMSamples", commit="cc8b6fc9c0e8255edac2ad61191f3ddbe6c681ae",
         path="DICOMSamples/CT_Implicit_Little_Headless_Retired.dcm",
         terms="No licence file in the repository; its readme.md says the file is "
               "CT-MONO2-12-lomb-an2 from Barre's collection "
               "(barre.dev/medical/samples)."),
    dict(modality="MR", region="sagittal head", label="matplotlib s1045",
         repo=None, path="sample_data/s1045.ima.gz", shape=(256, 256), dtype=">u2",
         sha256="32b424d64f62b7e71cb24d29fd53938ad5664d608055a67ab2b2af4369f8b89e",
         terms="matplotlib's sample data (mpl-data/sample_data, README.txt: 'the "
               "sample data needed for some of matplotlib's examples'), under "
               "matplotlib's licence; no separate terms. Raw 256x256 big-endian "
               "uint16, no header."),
    dict(modality="MR", region="axial brain", label="imageio dicom_file02",
         repo="imageio/imageio-binaries",
         commit="f8f64710ea88e7e4a352c0f7d8c0deac9f5fd685",
         path="images/dicom_file02.dcm", frame=0,
         terms="The repository's README.txt covers only its FreeImage binaries; no "
               "terms or origin given for this file (study 'Brain tumor', 12 frames "
               "of 'various contrasts and projections'; frame 0 is an axial T2)."),
    dict(modality="MR", region="heart", label="DICOMSamples MR-MONO2-8-16x-heart",
         repo="notZaki/DICOMSamples", commit="cc8b6fc9c0e8255edac2ad61191f3ddbe6c681ae",
         path="DICOMSamples/MR_Explicit_Little_MultiFrame.dcm",
         terms="No licence file in the repository; its readme.md says the file is "
               "MR-MONO2-8-16x-heart from Barre's collection "
               "(barre.dev/medical/samples)."),
    dict(modality="MR", region="abdomen", label="pydicom examples_overlay",
         repo="pydicom/pydicom", commit="fb1f24e4f0418008757766d8e79ec92dc2ab9855",
         path="src/pydicom/data/test_files/examples_overlay.dcm",
         terms="Repository under MIT (LICENSE); test_files/README.txt: GDCM's "
               "MR-SIEMENS-DICOM-WithOverlays.dcm with cropped pixel data, used under "
               "GDCM's BSD-style licence (quoted in that README)."),
    dict(modality="MR", region="prostate ADC", label="dcmqi pm-example-slice",
         repo="QIICR/dcmqi", commit="b6137d9ee8cf6cd6c074fe27d1af26a30b578753",
         path="data/paramaps/pm-example-slice.dcm",
         terms="Repository under a BSD 3-clause licence (LICENSE.txt, Brigham and "
               "Women's Hospital); no separate terms or origin given for its test "
               "data. An apparent-diffusion-coefficient map (body part PROSTATE)."),
    dict(modality="MR", region="sagittal knee", label="fo-dicom MOVEKNEE",
         repo="fo-dicom/fo-dicom", commit="1b92c5980a06a1906f4fbb362b4234b9003949de",
         path="Tests/FO-DICOM.Tests/Test Data/MOVEKNEE.dcm",
         terms="Repository under the Microsoft Public License (License.txt); no "
               "separate terms or origin given for its test data (study 'Moving knee', "
               "19 frames)."),
]

# --- DICOM (uncompressed little-endian only) ------------------------------------------

# Explicit-VR elements whose length takes 4 bytes after 2 reserved ones.
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
            b"UT", b"UV"}
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"


def dicom_elements(buf):
  """The top-level elements {(group, element): value bytes} of a DICOM file."""
  pos = 132 if buf[128:132] == b"DICM" else 0  # ACR-NEMA style files have no preamble
  explicit = buf[pos + 4:pos + 6].isalpha()  # a VR follows the first tag
  elements, depth = {}, 0
  while pos + 8 <= len(buf):
    group, elem = struct.unpack_from("<HH", buf, pos)
    if group == 0xFFFE:  # item and delimiters: tag and 4-byte length in any syntax
      length = struct.unpack_from("<I", buf, pos + 4)[0]
      pos += 8
      if elem == 0xE0DD:  # end of a sequence of undefined length
        depth -= 1
      elif elem == 0xE000 and length != 0xFFFFFFFF:
        pos += length  # an item of known length: skipped whole
      continue
    vr = buf[pos + 4:pos + 6]
    if (explicit or group == 0x0002) and vr.isalpha():  # file meta is always explicit
      if vr in LONG_VRS:
        length, pos = struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
      else:
        length, pos = struct.unpack_from("<H", buf, pos + 6)[0], pos + 8
    else:
      length, pos = struct.unpack_from("<I", buf, pos + 4)[0], pos + 8
    if length == 0xFFFFFFFF:
      if (group, elem) == (0x7FE0, 0x0010):
        raise ValueError("encapsulated (compressed) pixel data")
      depth += 1  # a sequence of undefined length: walk through, keep nothing inside
      continue
    if depth == 0:  # nested elements (e.g. an icon image's rows) must not overwrite
      elements[(group, elem)] = buf[pos:pos + length]
    pos += length
    if (group, elem) == (0x0002, 0x0010):
      syntax = elements[(group, elem)].rstrip(b"\0 ").decode()
      if syntax not in (IMPLICIT, EXPLICIT):
        raise ValueError(f"transfer syntax {syntax} (compressed or big-endian)")
      explicit = syntax == EXPLICIT
  return elements


def dicom_slice(buf, frame=None):
  """(the slice as float64 in the file's units, (frames, rows, cols))."""
  el = dicom_elements(buf)

  def number(tag, default=None):  # US values
    return struct.unpack("<H", el[tag][:2])[0] if el.get(tag) else default

  def text(tag, default):  # IS / DS / CS values
    return el[tag].rstrip(b"\0 ").decode() if el.get(tag) else default

  rows, cols = number((0x0028, 0x0010)), number((0x0028, 0x0011))
  bits, pixel_signed = number((0x0028, 0x0100)), number((0x0028, 0x0103), 0)
  stored = number((0x0028, 0x0101), bits)
  if number((0x0028, 0x0002), 1) != 1 or bits not in (8, 16):
    raise ValueError(f"not one sample of 8 or 16 bits (bits allocated {bits})")
  frames = int(text((0x0028, 0x0008), "1"))
  data = np.frombuffer(el[(0x7FE0, 0x0010)], "u1" if bits == 8 else "<u2",
                       frames * rows * cols).reshape(frames, rows, cols)
  x = data[frames // 2 if frame is None else frame].astype(np.int64)
  x &= (1 << stored) - 1  # bits above Bits Stored are not the pixel (overlays)
  if pixel_signed:  # two's complement within Bits Stored
    x = np.where(x >= 1 << (stored - 1), x - (1 << stored), x)
  x = x * float(text((0x0028, 0x1053), "1")) + float(text((0x0028, 0x1052), "0"))
  if text((0x0028, 0x0004), "MONOCHROME2") == "MONOCHROME1":  # white is low
    x = -x
  return x, (frames, rows, cols)


# --- conversion -----------------------------------------------------------------------


def resize_matrix(n, size):
  """(size, n) weights: area (each output pixel the mean of the input it covers) when
  shrinking, bilinear (pixel centres aligned, edges clamped) when enlarging."""
  m = np.zeros((size, n))
  if size <= n:
    edges = np.arange(size + 1) * n / size
    for i in range(size):
      for j in range(int(edges[i]), int(np.ceil(edges[i + 1]))):
        m[i, j] = min(edges[i + 1], j + 1) - max(edges[i], j)
    return m * size / n
  x = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
  j = np.minimum(x.astype(int), n - 2)
  m[np.arange(size), j] = j + 1 - x
  m[np.arange(size), j + 1] = x - j
  return m


def convert(x, modality):
  if modality == "CT":
    x = np.maximum(x, HU_AIR)
  h, w = x.shape
  s = min(h, w)
  x = x[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
  lo, hi = np.percentile(x, [0.5, 99.5])
  if hi <= lo:
    raise ValueError("a flat slice")
  x = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  m = resize_matrix(s, SIZE)
  return (m @ x @ m.T).astype(np.float32), s


# --- sources --------------------------------------------------------------------------


def git_dir(mirrors, repo):
  return os.path.join(mirrors, repo.replace("/", "+"), "repo")


def missing(mirrors):
  """What cannot be read, each with what to do."""
  out = []
  for src in SOURCES:
    if src["repo"] is None:
      continue
    where = git_dir(mirrors, src["repo"])
    found = os.path.isdir(where) and subprocess.run(
        ["git", f"--git-dir={where}", "cat-file", "-e",
         f"{src['commit']}:{src['path']}"],
        capture_output=True).returncode == 0
    line = f"fetch github:{src['repo']}"
    if os.path.isdir(where):  # there, but an older snapshot without the pinned file
      line += f"  (the mirror lacks {src['commit'][:10]}:{src['path']})"
    if not found and line not in out:
      out.append(line)
  return out


def read(src, mirrors):
  """(the slice as float64, original (frames, rows, cols), 'where it came from')."""
  if src["repo"] is None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    path = os.path.join(matplotlib.get_data_path(), src["path"])
    with open(path, "rb") as f:
      buf = f.read()
    if hashlib.sha256(buf).hexdigest() != src["sha256"]:
      raise ValueError(f"{path} is not the pinned file (sha256 differs)")
    x = np.frombuffer(gzip.decompress(buf), src["dtype"]).reshape(src["shape"])
    where = (f"matplotlib {matplotlib.__version__} mpl-data/{src['path']} "
             f"(sha256 {src['sha256'][:16]}...)")
    return x.astype(np.float64), (1,) + src["shape"], where
  buf = subprocess.run(["git", f"--git-dir={git_dir(mirrors, src['repo'])}", "show",
                        f"{src['commit']}:{src['path']}"],
                       capture_output=True, check=True).stdout
  x, shape = dicom_slice(buf, src.get("frame"))
  return x, shape, f"{src['repo']}@{src['commit']}:{src['path']}"


def sources_md(rows, command):
  lines = [
      "# Held-out real CT and MR slices: sources", "",
      f"Written by `{command}` (docs/ct/real_slices.py in tf_metainit; its docstring "
      "gives the conversion). Real anatomy only, no phantoms. Not shipped with the "
      "repository: the terms below are not all ours to pass on.", "",
      "Conversion, every slice: the DICOM rescale applied (CT in HU); CT below "
      "-1024 HU set to -1024 (scanner padding becomes air); a centred square crop "
      "(the longer side cut); [0, 1] by the 0.5 and 99.5 percentiles of the crop, "
      f"clipped; resized to {SIZE}x{SIZE} (area down, bilinear up).", "",
      "| # | name | modality | source (repo@commit:path) | original (frames x rows "
      "x cols) | slice | crop, resize | terms |",
      "|---|---|---|---|---|---|---|---|"]
  for k, (src, name, shape, where, side) in enumerate(rows):
    frames, h, w = shape
    frame = src.get("frame", frames // 2)
    used = f"frame {frame} of {frames}" if frames > 1 else "the only one"
    how = "bilinear up" if side < SIZE else ("area down" if side > SIZE else "none")
    crop = f"{side}x{side}" + (" (centred)" if (h, w) != (side, side) else "")
    lines.append(f"| {k} | {name} | {src['modality']} | `{where}` | "
                 f"{frames} x {h} x {w} | {used} | {crop}, {how} | {src['terms']} |")
  return "\n".join(lines) + "\n"


def contact_sheet(images, names, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  cols = 4
  rows = -(-len(images) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis("off")
  for ax, image, name in zip(axes.flat, images, names):
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(name, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True,
                      help="the .npz; SOURCES.md is written beside it")
  parser.add_argument("--mirrors", default="/work/.mirror")
  parser.add_argument("--contact", default=None, help="a PNG sheet of the slices")
  args = parser.parse_args()
  lacking = missing(args.mirrors)
  if lacking:
    sys.exit(f"Mirrors missing under {args.mirrors}; run:\n  " + "\n  ".join(lacking))
  images, rows = [], []
  for src in SOURCES:
    x, shape, where = read(src, args.mirrors)
    image, side = convert(x, src["modality"])
    name = f"{src['modality']} {src['region']} ({src['label']})"
    images.append(image)
    rows.append((src, name, shape, where, side))
    print(f"{name}: {shape[0]} x {shape[1]} x {shape[2]} -> {SIZE}x{SIZE}", flush=True)
  names = [r[1] for r in rows]
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  np.savez(args.out, image=np.stack(images), name=np.array(names),
           modality=np.array([s["modality"] for s in SOURCES]),
           source=np.array([r[3] for r in rows]))
  command = "python docs/ct/real_slices.py " + " ".join(sys.argv[1:])
  with open(os.path.join(os.path.dirname(os.path.abspath(args.out)), "SOURCES.md"),
            "w") as f:
    f.write(sources_md(rows, command))
  if args.contact:
    contact_sheet(images, names, args.contact)
  print(f"wrote {args.out} ({len(images)} slices)")


if __name__ == "__main__":
  main()
