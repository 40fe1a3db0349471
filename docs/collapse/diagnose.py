"""Instrumented MAML run: what happens to weights, inner grads and SIREN pre-activations.

  python docs/collapse/diagnose.py OUT.json STEPS EVERY [GIN_BINDING ...]

Builds the task and outer rate from image/text_cpu.gin (plus bindings) but runs the
old recipe itself: fixed inner SGD 1e-2, constant outer Adam. Every EVERY steps it
records, on 4 held-out images: each weight tensor's rms, the std of w0*(Wh+b) at each
sine layer, the inner-loop gradient norm per tensor at theta0, and the PSNR before and
after 1 and 2 inner steps. text64_maml_1e-4.json is `... 500 10` (outer lr 1e-4).
"""
import json, sys, time, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tf_metainit  # oneDNN
import gin, numpy as np, tensorflow as tf
from tf_metainit.cli import common
from tf_metainit import train
from tf_metainit.meta import maml, inner, optimizers
from tf_metainit.fields import base as fb
from tf_metainit.tasks import base as tb

out, steps, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bindings = sys.argv[4:]
common.parse_gin(["image/text_cpu.gin"], bindings)
task = gin.query_parameter("meta_train.task").scoped_configurable_fn()
lr = gin.query_parameter("outer/Adam.learning_rate")
field = task.field
opt = optimizers.Adam(lr).keras_optimizer(lr); opt.build(field.trainable_variables)
sgd = optimizers.SGD(1e-2)
ds = iter(task.train_dataset(0).batch(3, drop_remainder=True).prefetch(2))
val = tb.take(task.test_signals(), slice(0, 4))
w0 = field.w0
coords = task.coords

@tf.function(reduce_retracing=True)
def step(signals, s):
  seed = tb.stateless_seed(0, s)
  before, after, grads = maml.meta_loss_and_grads(task, field.trainable_variables, signals, seed, 2, sgd)
  opt.apply_gradients(zip(grads, field.trainable_variables))
  return tf.reduce_mean(before), tf.reduce_mean(after), [tf.norm(g) for g in grads]

@tf.function
def probe(signals):
  theta = [tf.convert_to_tensor(v) for v in field.trainable_variables]
  # pre-activations on the pixel grid (input independent of signal)
  h = coords; pre = []
  for i in range(0, len(theta) - 2, 2):
    z = w0 * (tf.matmul(h, theta[i]) + theta[i + 1]); pre.append(z); h = tf.sin(z)
  obs = task.observe(signals, None)
  params = fb.batch_params(theta, 4)
  losses = [task.loss(params, obs["coords"], obs["pixels"])]
  with tf.GradientTape() as t:
    t.watch(params); l = tf.reduce_sum(task.loss(params, obs["coords"], obs["pixels"]))
  g = t.gradient(l, params)
  p1 = [p - 1e-2 * gi for p, gi in zip(params, g)]
  losses.append(task.loss(p1, obs["coords"], obs["pixels"]))
  p2, _ = inner.adapt(task.loss, params, lambda i: (obs["coords"], obs["pixels"]), 2, sgd, unroll=True)
  losses.append(task.loss(p2, obs["coords"], obs["pixels"]))
  gn = [tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.reshape(gi, [4, -1])**2, 1))) for gi in g]
  return ([tf.sqrt(tf.reduce_mean(tf.square(v))) for v in theta],
          [tf.math.reduce_std(z) for z in pre],
          [tf.reduce_mean(tf.cast(tf.abs(z) > np.pi, tf.float32)) for z in pre],
          gn, [tf.reduce_mean(x) for x in losses],
          [tf.reduce_mean(tb.psnr_from_mse(x)) for x in losses])

rec = []
t0 = time.time()
for s in range(steps + 1):
  if s % every == 0:
    rms, pstd, pfrac, gn, ls, ps = [[float(x) for x in y] for y in probe(val)]
    r = dict(step=s, rms=rms, pre_std=pstd, pre_frac_gt_pi=pfrac, inner_grad=gn,
             val_loss=ls, val_psnr=ps)
    if s > 0: r.update(train_before=b, train_after=a, outer_grad=og)
    rec.append(r)
    print(s, f"{time.time()-t0:.0f}s", "psnr0/1/2 %.2f %.2f %.2f" % tuple(ps),
          "rms", " ".join(f"{x:.2e}" for x in rms[::2]), "pre_std", " ".join(f"{x:.2f}" for x in pstd),
          "g", " ".join(f"{x:.2e}" for x in gn[::2]), flush=True)
    json.dump(rec, open(out, "w"))
  if s == steps: break
  b, a, og = step(next(ds), tf.constant(s, tf.int64))
  b, a, og = float(b), float(a), [float(x) for x in og]
