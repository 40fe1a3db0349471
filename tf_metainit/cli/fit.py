r"""Fits a learned init to your own image, of any size, in a few steps.

  tf-metainit-fit --init=text --image=photo.png
  tf-metainit-fit --init=runs/text --image=photo.png --out_dir=fit_photo
  tf-metainit-fit --init=text_export --image=photo.png --steps=10 --compare
  tf-metainit-fit --init=ct64 --sinogram=scan.npy --angles=angles.npy
  tf-metainit-fit --init=chairs --views=my_chair/      # or a Phototourism scene

--init is a shipped pretrained init (tf_metainit.pretrained.list()), a run directory
(its best checkpoint; --checkpoint=latest for the last) or an export
(tf-metainit-export). Steps, optimizer and learning rate default to the
init's own test-time settings. Writes <out_dir>/reconstruction.png (at the image's
size, or --resolution), fit.json (PSNR after every step) and export/ (the fitted
field). --compare also fits the Standard init with Adam 1e-4 (Table 1) and reports
the steps it needs to reach the learned init's PSNR.
"""

import os

from absl import app
from absl import flags

from tf_metainit.cli import common

# The string flags: the init, the three kinds of input and the output folder.
for _name, _help in (
    ("init", "A shipped pretrained init's name (e.g. text; "
     "tf_metainit.pretrained.list()), a run directory or an export."),
    ("image", "The image file to fit (PNG, JPEG, ...)."),
    ("sinogram", "A CT sinogram to reconstruct: .npy (views, detector bins), with "
     "--angles."),
    ("angles", "The sinogram's view angles in radians: .npy (views,)."),
    ("views", "Posed views to fit: a ShapeNet object folder (transforms.json + PNGs) "
     "or a Phototourism scene (images/ + c2w_mats.npy, kinv_mats.npy, bds.npy)."),
    ("out_dir", "Output folder (new, empty, or an earlier fit's); default "
     "fit_<image name>.")):
  flags.DEFINE_string(_name, None, _help)
flags.DEFINE_integer("photo", 0, "Phototourism --views: the photo whose appearance is "
                     "fitted (index in sorted order).")
flags.DEFINE_integer("steps", None, "Test-time steps (default: the init's own).")
flags.DEFINE_integer("resolution", None, "Side of the square reconstruction "
                     "(default: the image's own size).")
flags.DEFINE_bool("compare", False, "Also fit the Standard init and compare.")
common.define_checkpoint_flag()
common.define_gin_flags()
flags.mark_flag_as_required("init")
flags.adopt_module_key_flags(common)  # --help lists them
FLAGS = flags.FLAGS


def main(argv):
  common.check_no_args(argv)
  from tf_metainit import checks  # pylint: disable=g-import-not-at-top
  from tf_metainit import fit  # pylint: disable=g-import-not-at-top
  common.run_and_report(lambda: checks.optional(checks.positive_int, "--steps",
                                                FLAGS.steps))
  common.run_and_report(lambda: checks.optional(checks.positive_int, "--resolution",
                                                FLAGS.resolution))
  source = _input()
  init = common.run_and_report(lambda: common.load_init(
      FLAGS.init, FLAGS.checkpoint, FLAGS.gin_file, FLAGS.gin_bindings))
  name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
  out_dir = FLAGS.out_dir or f"fit_{name}"
  if FLAGS.image:
    _report_image(common.run_and_report(lambda: fit.fit(
        init, FLAGS.image, out_dir, FLAGS.steps, FLAGS.resolution, FLAGS.compare)),
                  out_dir)
    return
  if FLAGS.sinogram:
    from tf_metainit import fit_ct  # pylint: disable=g-import-not-at-top
    result = common.run_and_report(lambda: fit_ct.fit(
        init, FLAGS.sinogram, FLAGS.angles, out_dir, FLAGS.steps))
    curve = result["sinogram_psnr"]
  else:
    from tf_metainit import fit_views  # pylint: disable=g-import-not-at-top
    result = common.run_and_report(lambda: fit_views.fit(
        init, FLAGS.views, out_dir, FLAGS.steps, FLAGS.photo))
    curve = result["psnr"]
  print(f"Learned init: PSNR {curve[0]:.2f} -> {curve[-1]:.2f} dB in "
        f"{result['num_steps']} steps ({result['optimizer']['name']}); wrote {out_dir}")


def _input():
  """The one input given: --image, --sinogram with --angles, or --views."""
  given = [f for f in ("image", "sinogram", "views") if getattr(FLAGS, f)]
  if len(given) != 1 or bool(FLAGS.sinogram) != bool(FLAGS.angles):
    raise app.UsageError("Give one input: --image=FILE, --sinogram=FILE.npy with "
                         "--angles=FILE.npy, or --views=DIR.")
  return getattr(FLAGS, given[0])


def _report_image(result, out_dir):
  psnr = result["psnr"]
  print(f"Learned init: PSNR {psnr[0]:.2f} -> {psnr[-1]:.2f} dB in "
        f"{result['num_steps']} steps ({result['optimizer']['name']}); wrote {out_dir}")
  if "standard" in result:
    standard = result["standard"]
    match = standard["steps_to_match_meta"]
    print(f"Standard init (Adam 1e-4): {standard['psnr'][-1]:.2f} dB after the same "
          f"steps; reaches the learned init's PSNR "
          + (f"at step {match:.0f}." if match is not None else "not within them."))


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
