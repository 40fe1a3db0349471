"""The binaries' command line as a person meets it: --help lists each binary's own
flags with an example, without loading TensorFlow; start-up is quiet unless asked."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMON_FLAGS = ("--gin_file", "--gin_bindings", "--[no]debug", "--[no]allow_pickle")
# binary: (its docstring's example, flags its --help must list)
BINARIES = {
    "meta_train": ("tf-metainit-train --root_dir=/tmp/text --gin_file=image/text_cpu.gin",
                   COMMON_FLAGS + ("--root_dir", "--[no]accept_config_changes")),
    "evaluate": ("tf-metainit-evaluate --root_dir=/tmp/text",
                 COMMON_FLAGS + ("--root_dir", "--checkpoint")),
    "export": ("tf-metainit-export --root_dir=/tmp/text --export_dir=/tmp/text_export",
               COMMON_FLAGS + ("--root_dir", "--checkpoint", "--export_dir")),
    "interpolate": ("tf-metainit-interpolate --root_dir=/tmp/text",
                    COMMON_FLAGS + ("--root_dir", "--checkpoint")),
    "appearance": ("tf-metainit-appearance --root_dir=runs/landmark_cpu",
                   COMMON_FLAGS + ("--root_dir", "--checkpoint")),
    "fit": ("tf-metainit-fit --init=runs/text --image=photo.png",
            COMMON_FLAGS + ("--init", "--image", "--out_dir", "--steps", "--checkpoint")),
    "fit_folder": ("tf-metainit-fit-folder --init=natural --folder=photos/ "
                   "--out_dir=photo_fields",
                   COMMON_FLAGS + ("--init", "--folder", "--out_dir", "--steps", "--batch",
                                   "--strategy", "--num_shards", "--shard")),
    # Not a run binary: no gin, no run directory.
    "benchmark": ("tf-metainit-benchmark --quick --output=/tmp/bench.md",
                  ("--output", "--workloads", "--[no]quick", "--[no]list")),
}
# Listed by --helpfull, never by --help: absl's logging flags, TensorFlow's none.
GLOBAL_FLAGS = ("--log_dir", "--[no]logtostderr", "--[no]only_check_args")
# What TensorFlow prints as it starts (see tf_metainit/cli/startup.py).
NOISE = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda",
         "cpu_feature_guard", "This TensorFlow binary is optimized", "cuInit",
         "system_path_file_exists", "Sharding callback duration")
TINY_TRAIN = ("--gin_file=image/text_cpu.gin",
              "--gin_bindings=meta_train.num_iterations=2",
              "--gin_bindings=ImageRegression.resolution=16",
              "--gin_bindings=ImageRegression.num_train=4",
              "--gin_bindings=ImageRegression.num_test=2",
              "--gin_bindings=meta_train.num_val_signals=2",
              "--gin_bindings=Siren.width=16")


def _env():
  """The user's environment: no TF_CPP_MIN_LOG_LEVEL (conftest.py sets one)."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  return dict(env, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")


def _start(args, cwd):
  return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=_env(), cwd=cwd)


def _finish(procs, timeout):
  return {name: (proc.communicate(timeout=timeout), proc.returncode)
          for name, proc in procs.items()}


def test_help_lists_each_binarys_flags_and_example_without_tensorflow(tmp_path):
  # -X importtime writes every import to stderr: TensorFlow must not be among them.
  procs = {name: _start(["-X", "importtime", str(REPO / "bin" / f"{name}.py"), "--help"],
                        tmp_path)
           for name in BINARIES}
  for name, ((out, err), code) in _finish(procs, 120).items():
    example, flags = BINARIES[name]
    assert code == 0, (name, err)
    assert example in out, name
    for flag in flags:
      assert f"  {flag}:" in out, (name, flag)
    for flag in GLOBAL_FLAGS:
      assert flag not in out, (name, flag)
    assert "--verbosity=1" in out and "Try --helpfull" not in out, name
    assert not [line for line in err.splitlines() if line.endswith("| tensorflow")], name


def test_help_as_a_console_script_and_with_h(tmp_path):
  # What setup.py's entry point runs: the binary's module is not __main__, and argv[0]
  # is the script's name.
  script = ("import sys; sys.argv[0] = 'tf-metainit-train'; "
            "from tf_metainit.cli import meta_train; meta_train.run()")
  procs = {"script": _start(["-c", script, "-h"], tmp_path),
           "module": _start(["-m", "tf_metainit.cli.fit", "--helpshort"], tmp_path)}
  results = _finish(procs, 120)
  (out, err), code = results["script"]
  assert code == 0, err
  assert BINARIES["meta_train"][0] in out
  assert "  --[no]accept_config_changes:" in out and "  --root_dir:" in out
  (out, err), code = results["module"]
  assert code == 0, err
  assert BINARIES["fit"][0] in out and "  --image:" in out


@pytest.mark.slow  # over 35 s on 2 cores; run with --runslow
def test_start_up_is_quiet_unless_asked(tmp_path):
  procs = {"quiet": _start([str(REPO / "bin" / "meta_train.py"),
                            f"--root_dir={tmp_path / 'quiet'}", *TINY_TRAIN], tmp_path),
           "verbose": _start([str(REPO / "bin" / "meta_train.py"), "--verbosity=1",
                              f"--root_dir={tmp_path / 'verbose'}", *TINY_TRAIN],
                             tmp_path)}
  results = _finish(procs, 300)
  (_, err), code = results["quiet"]
  assert code == 0, err
  assert "step 2/2" in err  # our own INFO lines stay
  assert [n for n in NOISE if n in err] == [], err
  (_, err), code = results["verbose"]
  assert code == 0, err
  assert "step 2/2" in err
  assert "absl::InitializeLog" in err or "oneDNN custom operations" in err, err
