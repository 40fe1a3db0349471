"""Speed and memory benchmark of meta-training and test-time optimisation.

Every workload runs the package's own code path (meta/outer.py's step inside
outer.function, inner.fit for test-time optimisation, task.render) on the paper's
fields, in its own process so that its peak resident memory is its own
(`python -m tf_metainit.benchmark --one=NAME`, see __main__.py). The driver
(cli/benchmark.py) runs the selected workloads one after another and writes
BENCHMARKS.md. Times are medians over repeated calls after warm-up; the first call
(tracing, graph optimisation or XLA compilation, and one execution) is reported
separately. The modules, by job:

  specs              the workloads by name and group (no TensorFlow)
  flops              FLOPs of a call, counted analytically (dense matmuls only)
  workloads          the Workload record and the paper's tasks the builders share
  matmul_workloads   the matmul peak, and matmuls at a workload's shapes
  meta_workloads     MAML and Reptile outer steps, and a hand-written MAML baseline
  tto_workloads      test-time optimisation and rendering
  pipelines          signals per second of the training input pipelines
  measure            machine facts, memory probes, timing one workload, result line
  analysis           the matmul peak, memory against K, paper-scale memory estimates
  goals              the goals table and the notes that explain it
  formatting         number formats
  report             the BENCHMARKS.md text, one function per section
"""
