"""tf_metainit: meta-learned initial weights for coordinate-based networks.

Implements Tancik et al., "Learned Initializations for Optimizing Coordinate-Based
Neural Representations" (CVPR 2021) in TensorFlow 2 / Keras 3.
"""

__version__ = "0.1.0"

import os

# TensorFlow turns its oneDNN kernels on by default only on some Intel CPUs. Elsewhere
# (e.g. the AMD EPYC of BENCHMARKS.md) its Eigen matmul runs at about half the BLAS
# rate, and oneDNN makes the second-order MAML step 1.5x faster. This takes effect only
# if tf_metainit is imported before TensorFlow (always so for the tf-metainit-*
# binaries); TF_ENABLE_ONEDNN_OPTS=0 keeps Eigen.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
