r"""Fits every image of a folder from a learned init into a field: one file holding
every signal's fitted weights, and a table of their PSNRs.

  tf-metainit-fit-folder --init=natural --folder=photos/ --out_dir=photo_fields
  tf-metainit-fit-folder --init=natural --folder=photos/ --out_dir=photo_fields \
      --steps=10 --resolution=64 --batch=32 --strategy=mirrored
  # two machines sharing a folder, each taking every other batch:
  tf-metainit-fit-folder ... --num_shards=2 --shard=0     # and --shard=1

Images are centre-cropped and resized to --resolution (default: the init's own) and
fitted --batch at a time. Writes <out_dir>/fields.npz (float32 weights of every
image, the names of the init's export in <out_dir>/init), psnr.csv and record.json.
Stopped or killed, the same command resumes: finished batches are kept, the rest
redone, and the result is the one an uninterrupted run gives. Files that cannot be
read are listed in record.json and skipped. Read the result with
tf_metainit.fitted_set.dataset(out_dir): a tf.data.Dataset of (name, weights).
"""

from absl import flags

from tf_metainit.cli import common

flags.DEFINE_string("init", None, "A shipped pretrained init's name (e.g. natural), a "
                    "run directory or an export.")
flags.DEFINE_string("folder", None, "The folder of images to fit (PNG, JPEG, ...; "
                    "sorted by name).")
flags.DEFINE_string("out_dir", None, "Output folder: new, empty, or this command's "
                    "earlier output (resumed).")
flags.DEFINE_integer("steps", None, "Test-time steps per image (default: the init's).")
flags.DEFINE_integer("resolution", None, "Side the images are resized to (default: "
                     "the init's own).")
flags.DEFINE_integer("batch", None, "Images fitted at once (default: as many as half "
                     "the free memory holds, at most 32).")
flags.DEFINE_float("adam_rate", None, "After the init's own learned steps, Adam at "
                   "this rate (default: the init's optimizer goes on).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "mirrored: every "
                  "local GPU (without GPUs, 2 CPU replicas) shares each batch.")
flags.DEFINE_integer("num_shards", 1, "Processes sharing the fit (each with its own "
                     "--shard); the one that ends last writes fields.npz.")
flags.DEFINE_integer("shard", 0, "This process's share: batches i with i mod "
                     "num_shards = shard.")
common.define_checkpoint_flag()
common.define_gin_flags()
for _name in ("init", "folder", "out_dir"):
  flags.mark_flag_as_required(_name)
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS


def main(argv):
  common.check_no_args(argv)
  from tf_metainit import checks  # pylint: disable=g-import-not-at-top
  from tf_metainit import distribute  # pylint: disable=g-import-not-at-top
  for name in ("steps", "resolution", "batch"):
    common.run_and_report(lambda name=name: checks.optional(
        checks.positive_int, f"--{name}", getattr(FLAGS, name)))
  common.run_and_report(lambda: checks.positive_int("--num_shards", FLAGS.num_shards))
  # Before TensorFlow starts: the CPU replicas are logical devices.
  strategy = common.run_and_report(lambda: distribute.get(FLAGS.strategy))
  from tf_metainit import fit_folder  # pylint: disable=g-import-not-at-top
  init = common.run_and_report(lambda: common.load_init(
      FLAGS.init, FLAGS.checkpoint, FLAGS.gin_file, FLAGS.gin_bindings))
  with strategy.scope():
    record = common.run_and_report(lambda: fit_folder.fit_folder(
        init, FLAGS.folder, FLAGS.out_dir, FLAGS.resolution, FLAGS.steps, FLAGS.batch,
        FLAGS.shard, FLAGS.num_shards, strategy, FLAGS.adam_rate))
  if record.get("state") != "complete":
    print(f"Shard {FLAGS.shard} of {FLAGS.num_shards} done; wrote its batches into "
          f"{FLAGS.out_dir}.")
    return
  psnr, skipped = record["psnr_fitted"], record["skipped"]
  print(f"Fitted {record['fitted']} images ({record['num_steps']} steps each): PSNR "
        + (f"{psnr['mean']:.2f} dB on average, {psnr['min']:.2f} the lowest"
           if psnr else "none")
        + (f"; skipped {len(skipped)} unreadable files (record.json)" if skipped else "")
        + f"; wrote {FLAGS.out_dir}")


def run():
  common.run(main, __name__)


if __name__ == "__main__":
  run()
