"""tf_metainit: meta-learned initial weights for coordinate-based networks.

Implements Tancik et al., "Learned Initializations for Optimizing Coordinate-Based
Neural Representations" (CVPR 2021) in TensorFlow 2 / Keras 3.
"""

__version__ = "0.1.0"
