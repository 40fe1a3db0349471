"""Draws collapse.png from diagnose.py's JSON (README: "Why MAML collapsed").

  python docs/collapse/plot.py docs/collapse/text64_maml_1e-4.json docs/collapse/collapse.png
"""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

records = json.load(open(sys.argv[1]))
steps = np.array([r["step"] for r in records])
fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
psnr = np.array([r["val_psnr"] for r in records])
for j, label in enumerate(("before the inner loop", "after 1 step", "after 2 steps")):
  axes[0].plot(steps, psnr[:, j], label=label)
axes[0].set(title="held-out PSNR (dB)", xlabel="outer step")
rms = np.array([r["rms"] for r in records])
pre = np.array([r["pre_std"] for r in records])
grad = np.array([r["inner_grad"] for r in records])
for layer in range(1, rms.shape[1] // 2):
  axes[1].plot(steps, rms[:, 2 * layer] / rms[0, 2 * layer], label=f"kernel {layer}")
axes[1].plot(steps, np.sqrt(1 + (1e-4 / rms[0, 2]) ** 2 * steps), "k--",
             label="Adam random walk\nsqrt(rms0² + lr² t)")
axes[1].set(title="hidden kernel rms / its init", xlabel="outer step")
for layer in range(1, pre.shape[1]):
  axes[2].plot(steps, pre[:, layer], label=f"sine layer {layer}")
axes[2].axhline(np.pi, color="grey", lw=0.5)
axes[2].set(title="std of w0·(Wh+b) at hidden sine layers", xlabel="outer step")
for k in range(0, grad.shape[1], 2):
  axes[3].semilogy(steps, grad[:, k], label=f"kernel {k // 2}")
axes[3].set(title="inner-loop gradient norm at θ0", xlabel="outer step")
for ax in axes:
  ax.axvspan(380, steps[-1], color="red", alpha=0.07)
  ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=90)
