"""The workloads by name: what each measures, in which group, at which sizes.

Plain data, no TensorFlow: the driver lists and selects from it, the child process
builds the named workload (measure.run_one) and the report finds results by these names.
"""

import importlib.util
import json

# In the order the report's tables list them.
ALGORITHM_TITLES = {"maml_so": "MAML (2nd order)", "maml_fo": "MAML (1st order)",
                    "reptile": "Reptile"}


def _modes(name, group, kind, **kwargs):
  return {f"{name}_{mode}": dict(group=group, kind=kind, jit=(mode == "xla"), **kwargs)
          for mode in ("graph", "xla")}


# The Adam rates of the photograph workloads, chosen on the validation photographs at
# 256² (docs/any_size/choices.json): Standard's, and the one each shipped init's fit
# switches to after its learned steps (None: its last learned rates on).
PHOTO_RATES = {"standard": 1e-4, "natural": 1e-4, "natural_any": 1e-4}
FOLDER_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
# At 256², where a step costs 16x: around the 64² choice (on the 64² validation batch
# only 1e-4 got every image to 30 dB within 400 steps; 3e-4 and above never did).
FOLDER_RATES_256 = (3e-5, 1e-4, 3e-4)
# Adam after a shipped init's learned steps (tf-metainit-fit-folder --adam_rate):
# small, since the init's steps land near the image already.
FOLDER_AFTER_RATES = (1e-6, 3e-6, 1e-5)


def workload_specs(quick=False):
  """Ordered {name: spec}; a spec is {'group', 'kind', builder kwargs...}.

  `quick` shrinks sizes, not structure.
  """
  q = quick
  specs = {}
  specs["matmul_peak"] = dict(group="peak", kind="matmul", jit=False,
                               n=2048 if q else 4096)
  goal_res = 32 if q else 64
  # The matmul shapes of the two goal workloads: MAML (3 images) and test-time (1).
  for batch in (3, 1):
    specs[f"matmul_siren_b{batch}"] = dict(group="peak", kind="matmul_shapes", jit=False,
                                           points=goal_res ** 2, width=256, batch=batch)
  maml_res = (16, 32) if q else (32, 64, 128, 178)
  for r in maml_res:
    specs.update(_modes(f"maml_so_r{r}", "maml", "image_meta", algorithm="maml_so",
                        resolution=r, batch=3, inner_steps=2))
  specs.update(_modes(f"plain_maml_r{goal_res}", "plain", "plain_maml",
                      resolution=goal_res, batch=3, inner_steps=2))
  # Where the goal step's time goes, by kernel kind (TensorFlow's profiler).
  specs[f"profile_maml_so_r{goal_res}"] = dict(
      group="profile", kind="profile", jit=False, algorithm="maml_so",
      resolution=goal_res, batch=3, inner_steps=2, calls=3)
  # The same step in JAX jit, the reference's framework (optional: the compare extra).
  for batching in ("loop", "vmap"):
    specs[f"jax_maml_r{goal_res}_{batching}"] = dict(
        group="jax", kind="jax_maml", jit=True, resolution=goal_res, batch=3,
        inner_steps=2, batching=batching)
  # tf.distribute's split and all-reduce: the same global batch on 1 and 2 replicas.
  for replicas in (1, 2):
    specs[f"replicas_maml_r{goal_res}_x{replicas}"] = dict(
        group="replicas", kind="replicated_meta", jit=False, resolution=goal_res,
        batch=4, inner_steps=2, replicas=replicas)
  specs.update(_modes(f"reptile_r{goal_res}", "reptile", "image_meta",
                      algorithm="reptile", resolution=goal_res, batch=4 if q else 10,
                      inner_steps=2))
  for r in ((32, 64) if q else (64, 256)):
    specs.update(_modes(f"ct_reptile_r{r}", "ct", "ct_reptile", resolution=r,
                        inner_steps=3 if q else 12, projections=20))
  nerf = dict(data_resolution=16 if q else 128)
  specs.update(_modes("nerf_reptile", "nerf", "nerf_reptile", rays=32 if q else 128,
                      samples=32 if q else 128, inner_steps=4 if q else 32, **nerf))
  specs.update(_modes("nerf_render", "nerf", "nerf_render", samples=32 if q else 128,
                      **nerf))
  # Phototourism at the paper's step (64 steps x 64 rays x 128 samples), 64-px photos.
  specs.update(_modes("landmark_reptile", "nerf", "landmark_reptile",
                      rays=16 if q else 64, samples=32 if q else 128,
                      inner_steps=4 if q else 64, long_side=16 if q else 64))
  specs.update(_modes("landmark_render", "nerf", "landmark_render",
                      samples=32 if q else 128, long_side=16 if q else 64))
  # Steps per call: about a second of work each on the 2-core CPU.
  specs.update(_modes(f"tto_siren_r{goal_res}", "tto", "tto", field="siren",
                      resolution=goal_res, steps=5 if q else 50))
  specs.update(_modes(f"tto_ct_r{64 if q else 256}", "tto", "tto", field="fourier",
                      resolution=64 if q else 256, steps=5 if q else 10))
  # The user-visible speed: an image file to 25 and 30 dB, shipped init vs Standard.
  for r in ((16,) if q else (64, 256)):
    for init in ("meta", "standard"):
      for target in (25, 30):
        specs[f"time_to_{target}db_{init}_r{r}"] = dict(
            group="time_to_psnr", kind="time_to_psnr", jit=False, init=init,
            resolution=r, target_db=float(target),
            # 256² steps cost 16x: a cap that keeps each call near a minute.
            max_steps=50 if q else (2000 if r == 64 else 200))
  # A photograph, the shipped 'natural' init against Standard, each at the Adam rate
  # chosen on the validation photos (docs/any_size/choices.json); capped in steps so
  # each run stays within minutes.
  for size, cap in (((16, 20),) if q else ((64, 300), (256, 200), (512, 120),
                                           (None, 60))):
    photo = "hubble_deep_field.jpg" if size is None else "astronaut.png"
    for init, rate in PHOTO_RATES.items():
      specs[f"photo_{init}_{size or 'own'}"] = dict(
          group="photo_to_psnr", kind="photo_to_psnr", photo=photo, resolution=size,
          init=init, rate=rate, max_steps=cap, targets=(25.0, 30.0))
  specs["photo_memory_4mp"] = dict(
      group="photo_to_psnr", kind="photo_to_psnr", photo="retina.jpg",
      resolution=32 if q else 2000, init="natural", rate=PHOTO_RATES["natural"],
      max_steps=2,
      targets=(25.0, 30.0))
  # Many images at once (tf-metainit-fit-folder): images per second until every one
  # of a batch reaches 30 dB, on 1 and 2 replicas; Standard's Adam rate is chosen on a
  # validation batch among FOLDER_RATES.
  # (Quick: 32², where the 64-px init climbs slower, to 25 dB.)
  for r, init, batch, cap in (((32, "natural", 4, 20),) if q else (
      (64, "natural", 16, 400), (256, "natural_any", 2, 150))):
    for who in (init, "standard"):
      for replicas in (1, 2):
        specs[f"folder_{who}_r{r}_x{replicas}"] = dict(
            group="folder_throughput", kind="folder_throughput", init=who,
            resolution=r, batch=batch, replicas=replicas, target_db=25.0 if q else 30.0,
            max_steps=cap, rates=FOLDER_RATES if r < 256 else FOLDER_RATES_256,
            after_rates=FOLDER_AFTER_RATES,
            # The same math on 2 replicas: the 1-replica row's choice, when measured.
            **({"choice_of": f"folder_{who}_r{r}_x1"} if replicas > 1 else {}))
  specs.update(_modes("tto_nerf", "tto", "tto", field="nerf", rays=16 if q else 64,
                      samples=32 if q else 128, steps=5 if q else 20, **nerf))
  k_res = 16 if q else 64
  for algorithm in ("maml_so", "maml_fo", "reptile"):
    for k in ((1, 2, 4) if q else (1, 2, 4, 8, 16)):
      specs[f"k_{algorithm}_k{k}"] = dict(
          group="scaling_k", kind="image_meta", jit=False, algorithm=algorithm,
          resolution=k_res, batch=3, inner_steps=k)
  for algorithm in ("maml_fo", "reptile"):
    for r in maml_res:
      specs[f"res_{algorithm}_r{r}"] = dict(
          group="scaling_res", kind="image_meta", jit=False, algorithm=algorithm,
          resolution=r, batch=3, inner_steps=2)
  specs.update(_pipeline_specs(quick, goal_res))
  return specs


def _pipeline_specs(quick, goal_res):
  """The input pipelines: the datasets the training workloads read, at their sizes."""
  q = quick
  specs = {}
  specs["pipeline_text"] = dict(group="pipeline", kind="pipeline", dataset="text",
                                resolution=goal_res, num=20 if q else 200, batch=3)
  specs["pipeline_text_178"] = dict(group="pipeline", kind="pipeline", dataset="text",
                                    resolution=32 if q else 178, num=20 if q else 200,
                                    batch=3)
  for name in ("celeb_a", "imagenette"):
    specs[f"pipeline_{name}"] = dict(group="pipeline", kind="pipeline", dataset=name,
                                     resolution=32 if q else 178, num=0, batch=3)
  specs["pipeline_ct"] = dict(group="pipeline", kind="pipeline", dataset="ct",
                              resolution=64 if q else 256, num=4 if q else 32, batch=1)
  specs["pipeline_shapenet"] = dict(group="pipeline", kind="pipeline",
                                    dataset="shapenet", resolution=16 if q else 128,
                                    num=2 if q else 4, batch=1)
  specs["pipeline_shapenet_disk"] = dict(group="pipeline", kind="pipeline",
                                         dataset="shapenet_disk",
                                         resolution=16 if q else 128,
                                         num=2 if q else 4, batch=1)
  return specs


GROUPS = ("peak", "maml", "plain", "jax", "profile", "replicas", "reptile", "ct", "nerf",
          "tto", "time_to_psnr", "photo_to_psnr", "folder_throughput",
          "scaling_k", "scaling_res", "pipeline")

# Which training workloads consume each pipeline's signals (the fastest one counts).
PIPELINE_CONSUMERS = {
    "text": ("maml_so_r{r}_graph", "reptile_r{r}_graph", "k_maml_fo_k1",
             "k_reptile_k1"),
    "text_178": ("maml_so_r{r}_graph", "res_reptile_r{r}", "res_maml_fo_r{r}"),
    "celeb_a": ("maml_so_r{r}_graph", "res_reptile_r{r}", "res_maml_fo_r{r}"),
    "imagenette": ("maml_so_r{r}_graph", "res_reptile_r{r}", "res_maml_fo_r{r}"),
    "ct": ("ct_reptile_r{r}_graph",),
    "shapenet": ("nerf_reptile_graph",),
    "shapenet_disk": ("nerf_reptile_graph",),
}


def spec_key(spec):
  """Identical configurations (e.g. a K-sweep point that is also a main workload)
  are measured once."""
  return json.dumps({k: v for k, v in spec.items() if k != "group"}, sort_keys=True)


def has_jax():
  """Whether the compare extra (JAX) is installed, without importing it."""
  return importlib.util.find_spec("jax") is not None


def select(names_or_groups, quick=False):
  """Workload names for a comma list of groups / names, or 'all'."""
  specs = workload_specs(quick)
  wanted = [w.strip() for w in names_or_groups.split(",") if w.strip()]
  if not wanted or wanted == ["all"]:
    # The optional comparison runs where its extra is installed.
    return [n for n, s in specs.items() if s["group"] != "jax" or has_jax()]
  out = []
  for w in wanted:
    if w in GROUPS:
      out += [n for n, s in specs.items() if s["group"] == w]
    elif w in specs:
      out.append(w)
    else:
      raise ValueError(f"Unknown workload or group {w!r}. Groups: {', '.join(GROUPS)}; "
                       f"workloads: {', '.join(specs)}.")
  jax_names = [n for n in out if specs[n]["group"] == "jax"]
  if jax_names and not has_jax():
    raise ValueError(f"{', '.join(jax_names)} need JAX, which is not installed: "
                     'pip install -e ".[compare]", or leave out the jax group.')
  # The matmul peak is the yardstick of every fraction: always measured.
  out = ["matmul_peak"] + [n for n in out if n != "matmul_peak"]
  return list(dict.fromkeys(out))
