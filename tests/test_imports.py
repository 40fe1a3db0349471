"""The package's import graph: no cycles, no module imports a higher layer, and no
job imports another job.

Layers, bottom to top; a module may import modules of its own layer or below:
  base   tf_metainit itself (the version), checks (gin-bound numbers), distribute
         (tf.distribute strategies), files (atomic writes), layout (a run directory's
         paths), figures, progress (terminal progress bars), fields/, physics/, data/:
         coordinate networks, forward models and datasets know of no task
  tasks  tasks/: signals, observations, losses and renders on top of those
  meta   meta/: inner loops, MAML, Reptile and inits, written against the Task seam
  library  what the jobs share: testtime (test-time optimisation), monitor
         (validation, collapse), checkpoints, runs (a run's record and its Meta init),
         provenance, exports (the export format), baselines (the inits a comparison
         starts from), fitting (what every fit writes), pretrained (the shipped inits),
         tuning (test-time settings chosen on the validation split)
  jobs   train, evaluate, export, fit, fit_ct, fit_views, interpolate, appearance,
         benchmark: siblings over the library, none imports another
  cli    cli/: the binaries
Modules are parsed with `ast`, never imported, so imports inside functions count too
(a lazy import hides a cycle without breaking it), and so do strings naming a
submodule exactly (the task registry imports by name).
"""

import ast
import pathlib

PACKAGE = "tf_metainit"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

# The jobs: each may import the library, never another job (a package such as
# benchmark is one job).
JOBS = ("tf_metainit.train", "tf_metainit.evaluate", "tf_metainit.export",
        "tf_metainit.fit", "tf_metainit.fit_ct", "tf_metainit.fit_views",
        "tf_metainit.fit_folder",
        "tf_metainit.interpolate", "tf_metainit.appearance", "tf_metainit.benchmark")
# Module-name prefixes, bottom layer first.
LAYERS = (
    ("base", ("tf_metainit", "tf_metainit.checks", "tf_metainit.distribute",
              "tf_metainit.files", "tf_metainit.layout", "tf_metainit.figures",
              "tf_metainit.progress",
              "tf_metainit.fields", "tf_metainit.physics", "tf_metainit.data")),
    ("tasks", ("tf_metainit.tasks",)),
    ("meta", ("tf_metainit.meta",)),
    ("library", ("tf_metainit.testtime", "tf_metainit.monitor",
                 "tf_metainit.checkpoints", "tf_metainit.runs", "tf_metainit.provenance",
                 "tf_metainit.exports", "tf_metainit.baselines", "tf_metainit.fitting",
                 "tf_metainit.pretrained", "tf_metainit.fitted_set", "tf_metainit.tuning")),
    ("jobs", JOBS),
    ("cli", ("tf_metainit.cli",)),
)


def module_files(root, package):
  """{module name: path} of every .py file under `root` (the package `package`)."""
  modules = {}
  for path in sorted(root.rglob("*.py")):
    parts = (package,) + path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    modules[".".join(parts)] = path
  return modules


def _resolve(name, modules):
  """The module `name` refers to: itself, or the longest module prefix of it."""
  while name and name not in modules:
    name = name.rpartition(".")[0]
  return name or None


def import_graph(root, package):
  """{module: {imported module: first line}} within the package."""
  modules = module_files(root, package)
  graph = {}
  for module, path in modules.items():
    is_package = path.name == "__init__.py"
    edges = graph[module] = {}

    def add(name, line, module=module, edges=edges):
      target = _resolve(name, modules)
      if target is not None and target != module:
        edges.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        for alias in node.names:
          add(alias.name, node.lineno)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's own package upwards
          anchor = module.split(".")
          anchor = anchor[:len(anchor) - node.level + is_package]
          base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
          # `from pkg import mod` imports pkg.mod; `from mod import name`, mod.
          full = f"{base}.{alias.name}"
          add(full if full in modules else base, node.lineno)
      elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and "." in node.value and node.value in modules):
        # Dotted only: a bare "tf_metainit" is rather a folder name (ShapeNet cache).
        add(node.value, node.lineno)
  return graph


def find_cycles(graph):
  """Import cycles as [a, b, ..., a], one per back edge of a depth-first search."""
  cycles, state, stack = [], {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == "open":
        cycles.append(stack[stack.index(target):] + [target])
      elif target not in state:
        visit(target)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node)
  return cycles


def layer_of(module, layers=LAYERS):
  """(index, name) of the layer whose longest prefix matches `module`, or None."""
  best = None
  for index, (name, prefixes) in enumerate(layers):
    for prefix in prefixes:
      if module == prefix or module.startswith(prefix + "."):
        if best is None or len(prefix) > best[0]:
          best = (len(prefix), index, name)
  return None if best is None else best[1:]


def upward_imports(graph, layers=LAYERS):
  """'a (layer) imports b (higher layer), line n' for every import going up."""
  found = []
  for module, edges in sorted(graph.items()):
    for target, line in sorted(edges.items()):
      low, high = layer_of(module, layers), layer_of(target, layers)
      if low is None or high is None:
        continue  # test_every_module_has_a_layer names them
      if high[0] > low[0]:
        found.append(f"{module} ({low[1]}) imports {target} ({high[1]}), line {line}")
  return found


def job_of(module, jobs=JOBS):
  return next((j for j in jobs if module == j or module.startswith(j + ".")), None)


def jobs_importing_jobs(graph, jobs=JOBS):
  """'a imports b, line n' for every import from one job into another."""
  found = []
  for module, edges in sorted(graph.items()):
    for target, line in sorted(edges.items()):
      mine, theirs = job_of(module, jobs), job_of(target, jobs)
      if mine and theirs and mine != theirs:
        found.append(f"{module} imports {target}, line {line}")
  return found


def test_every_module_has_a_layer():
  graph = import_graph(ROOT, PACKAGE)
  assert "tf_metainit.cli.common" in graph  # the walk found the package
  missing = sorted(m for m in graph if layer_of(m) is None)
  assert not missing, f"Give these modules a layer in LAYERS: {missing}"


def test_no_import_cycles():
  cycles = find_cycles(import_graph(ROOT, PACKAGE))
  assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_upward_imports():
  found = upward_imports(import_graph(ROOT, PACKAGE))
  assert not found, "imports from a lower layer to a higher one:\n" + "\n".join(found)


def test_no_job_imports_another_job():
  found = jobs_importing_jobs(import_graph(ROOT, PACKAGE))
  assert not found, "jobs importing jobs (share through the library):\n" + "\n".join(found)


def test_checker_sees_a_job_importing_a_job(tmp_path):
  pkg = tmp_path / "pkg"
  (pkg / "bench").mkdir(parents=True)
  for name in ("__init__.py", "bench/__init__.py", "lib.py"):
    (pkg / name).write_text("")
  (pkg / "train.py").write_text("from pkg import lib\n")
  (pkg / "fit.py").write_text("import pkg.lib\n\ndef f():\n  from pkg import train\n")
  (pkg / "bench" / "a.py").write_text("from pkg.bench import b\nfrom pkg import fit\n")
  (pkg / "bench" / "b.py").write_text("from pkg import lib\n")
  jobs = ("pkg.train", "pkg.fit", "pkg.bench")
  assert jobs_importing_jobs(import_graph(pkg, "pkg"), jobs) == [
      "pkg.bench.a imports pkg.fit, line 2", "pkg.fit imports pkg.train, line 4"]


def test_checker_sees_lazy_cycles_and_upward_imports(tmp_path):
  # A fake package with what the checks must catch, so they cannot pass vacuously.
  pkg = tmp_path / "pkg"
  (pkg / "low").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "low" / "__init__.py").write_text("")
  (pkg / "low" / "a.py").write_text("def f():\n  from pkg import high\n")
  (pkg / "high.py").write_text("from pkg.low import a\nfrom . import other\n")
  (pkg / "other.py").write_text("import pkg.high\n")
  (pkg / "low" / "b.py").write_text("NAMES = ('pkg.low.a', 'pkg')\n")
  graph = import_graph(pkg, "pkg")
  assert graph["pkg.low.a"] == {"pkg.high": 2}
  assert graph["pkg.low.b"] == {"pkg.low.a": 1}
  assert graph["pkg.high"] == {"pkg.low.a": 1, "pkg.other": 2}
  assert sorted(map(tuple, find_cycles(graph))) == [
      ("pkg.high", "pkg.low.a", "pkg.high"), ("pkg.high", "pkg.other", "pkg.high")]
  layers = (("low", ("pkg", "pkg.low")), ("high", ("pkg.high", "pkg.other")))
  assert upward_imports(graph, layers) == [
      "pkg.low.a (low) imports pkg.high (high), line 2"]
