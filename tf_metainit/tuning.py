"""Test-time settings chosen on the validation split, as the paper tuned every baseline.

For each setting (CT view count, ...) and init, the validation signals are fitted at
the init's configured learning rate times each of `rate_factors`, the metric traced
every `trace_every` steps up to the setting's step budget; the (rate, step) with the
highest mean validation metric wins, ties going to fewer steps, then to the lower
rate. An init fitted with meta-learned rates keeps them (they were learned for its
steps, and a scaled copy is no longer what was learned): only its step count is
chosen. A classical method chooses among the product of its candidate keyword values.
Nothing here sees a test signal: the caller hands in the validation signals.

`Chosen` holds the choices and every candidate's curve; `gin_bindings` writes the
choices as evaluate bindings, so the same table can be rebuilt without the sweep.
"""

import dataclasses
import itertools
import re

import numpy as np

from tf_metainit import testtime
from tf_metainit.meta import learned_lr

DEFAULT_RATE_FACTORS = (0.3, 1.0, 3.0)


@dataclasses.dataclass
class Chosen:
  """optimizers[name][setting] (None: the init's own learned rates), steps[name]
  [setting], classical[method][setting] (keyword settings), and `candidates`: per
  setting, per row, every candidate's description and mean validation curve."""
  optimizers: dict = dataclasses.field(default_factory=dict)
  steps: dict = dataclasses.field(default_factory=dict)
  classical: dict = dataclasses.field(default_factory=dict)
  candidates: dict = dataclasses.field(default_factory=dict)

  def optimizer(self, name, setting, fallback):
    chosen = self.optimizers.get(name, {}).get(str(setting))
    return fallback if chosen is None else chosen


def scaled(optimizer, factor):
  """A fixed-rate optimizer at `factor` times its learning rate."""
  return dataclasses.replace(optimizer, learning_rate=optimizer.learning_rate * factor)


def best_candidate(curves):
  """Index and traced-step index of the best (candidate, step): highest mean metric,
  then fewer steps, then the earlier candidate. curves: list of (steps, mean curve)."""
  best = None
  for i, (steps, curve) in enumerate(curves):
    for j, (step, value) in enumerate(zip(steps, curve)):
      key = (-float(value), int(step), i)
      if np.isfinite(value) and (best is None or key < best[0]):
        best = (key, i, j)
  if best is None:
    raise ValueError("Every candidate's validation metric is NaN or infinite: the "
                     "learning rates diverge. Lower evaluate.optimizer_settings' rates "
                     "or the rate factors.")
  return best[1], best[2]


def choose(tto, params, choices, signals, settings, rate_factors, budget, trace_every,
           chunk, classical=None, task=None, on_row=None):
  """Chooses every init's and classical method's settings on `signals`.

  Args:
    tto: a testtime.TestTimeOptimizer over the task.
    params: {init name: unbatched params}, as baselines.build gives.
    choices: testtime.Choices: each init's configured optimizer and step budget.
    signals: the validation signals (dict of arrays).
    settings: the settings to choose for.
    rate_factors: multipliers of each configured fixed learning rate tried.
    budget: whether the chosen step may be below the configured budget (True) or the
      budget is kept and only the rate is chosen (False).
    trace_every: the metric's trace interval (the step grid chosen on).
    chunk: signals fitted at once.
    classical: {method: {keyword: candidate values}} for task.classical.
    task: the task (needed for classical methods).
    on_row: called with (setting, row name, its choice text) as each row is chosen.
  Returns:
    a Chosen.
  """
  chosen = Chosen()
  for setting in settings:
    key = str(setting)
    table = chosen.candidates.setdefault(key, {})
    for name, init in params.items():
      configured = choices.optimizer(name, setting)
      cap = choices.steps(name, setting)
      learned = isinstance(configured, learned_lr.LearnedRates)
      candidates = ([configured] if learned else
                    [scaled(configured, f) for f in rate_factors])
      curves = []
      for optimizer in candidates:
        trace, _ = tto.run(init, signals, optimizer, cap, setting, trace_every, chunk)
        steps = testtime.traced_steps(cap, trace_every)
        if not budget:  # only the budget's own value counts
          steps, trace = steps[-1:], trace[-1:]
        curves.append((steps, trace.mean(axis=1)))
      i, j = best_candidate(curves)
      chosen.optimizers.setdefault(name, {})[key] = None if learned else candidates[i]
      chosen.steps.setdefault(name, {})[key] = int(curves[i][0][j])
      table[name] = [{"optimizer": opt.describe(), "steps": s.tolist(),
                      "metric": c.tolist()} for opt, (s, c) in zip(candidates, curves)]
      if on_row:
        on_row(setting, name, choice_text(chosen, name, setting, configured))
    for method, grid in (classical or {}).items():
      names = sorted(grid)
      options = [dict(zip(names, values))
                 for values in itertools.product(*(grid[n] for n in names))]
      scores = [float(np.mean(task.classical(method, signals, setting, o)[1]))
                for o in options]
      curves = [(np.zeros(1, int), np.array([s])) for s in scores]
      chosen.classical.setdefault(method, {})[key] = options[best_candidate(curves)[0]]
      table[f"classical:{method}"] = [{"settings": o, "metric": [s]}
                                      for o, s in zip(options, scores)]
      if on_row:
        on_row(setting, method, str(chosen.classical[method][key]))
  return chosen


def choice_text(chosen, name, setting, configured):
  """'adam 0.0005, 250 steps' (or 'learned rates, 12 steps') of a row's choice."""
  opt = chosen.optimizer(name, setting, configured)
  steps = chosen.steps[name][str(setting)]
  if isinstance(opt, learned_lr.LearnedRates):
    return f"its learned rates, {steps} steps"
  return f"{opt.name} {opt.learning_rate:.3g}, {steps} steps"


def _scope(name, setting):
  """A gin scope for one row and setting ('meta:SV', 1 -> chosen_meta_SV_1)."""
  return re.sub(r"\W", "_", f"chosen_{name}_{setting}")


def _key(setting):
  return repr(setting) if isinstance(setting, str) else str(setting)


def gin_bindings(chosen, settings, header):
  """The choices as evaluate bindings (a gin file's text), after a `header` comment."""
  lines = [f"# {line}" if line else "#" for line in header.splitlines()]
  opt_entries, step_entries = [], []
  for name in chosen.steps:
    per_opt, per_steps = [], []
    for setting in settings:
      opt = chosen.optimizers[name][str(setting)]
      if opt is not None:
        scope = _scope(name, setting)
        cls = type(opt).__name__  # the gin configurable (SGD, Adam)
        lines.append(f"{scope}/{cls}.learning_rate = {opt.learning_rate!r}")
        per_opt.append(f"{_key(setting)}: @{scope}/{cls}()")
      per_steps.append(f"{_key(setting)}: {chosen.steps[name][str(setting)]}")
    if per_opt:
      opt_entries.append(f"    {name!r}: {{{', '.join(per_opt)}}}")
    step_entries.append(f"    {name!r}: {{{', '.join(per_steps)}}}")
  if opt_entries:
    lines.append("evaluate.optimizer_settings = {\n" + ",\n".join(opt_entries) + "}")
  lines.append("evaluate.num_steps = {\n" + ",\n".join(step_entries) + "}")
  if chosen.classical:
    entries = []
    for method, per_setting in chosen.classical.items():
      inner = ", ".join(f"{_key(s)}: {per_setting[str(s)]!r}" for s in settings)
      entries.append(f"    {method!r}: {{{inner}}}")
    lines.append("evaluate.classical = {\n" + ",\n".join(entries) + "}")
  return "\n".join(lines) + "\n"


def check_rate_factors(rate_factors):
  """Returns the factors as floats, or an error naming the binding."""
  factors = tuple(float(f) for f in rate_factors)
  if not factors or any(not np.isfinite(f) or f <= 0 for f in factors):
    raise ValueError(f"evaluate.choose_rate_factors must be positive numbers, got "
                     f"{rate_factors!r} (e.g. (0.3, 1, 3)).")
  return factors

