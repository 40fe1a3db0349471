"""tf_metainit: learned initializations for coordinate-based networks in TensorFlow."""

import os
import re

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "tf_metainit", "__init__.py")) as f:
  VERSION = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setuptools.setup(
    name="tf_metainit",
    version=VERSION,
    description="Meta-learned initializations (MAML, Reptile) for SIREN, Fourier-feature "
                "MLPs and NeRF in TensorFlow 2 / Keras 3.",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    packages=(setuptools.find_packages(include=["tf_metainit", "tf_metainit.*"])
              + ["tf_metainit.gin_configs"]),
    # The configs stay in the repo's top-level gin/ and ship inside the package as
    # tf_metainit/gin_configs (a data-only package; cli/common.py finds either).
    package_dir={"tf_metainit.gin_configs": "gin"},
    package_data={"tf_metainit.gin_configs": ["**/*.gin"],
                  # The shipped inits (tf_metainit.pretrained): weights, manifest, card.
                  "tf_metainit.pretrained": ["*/manifest.json", "*/weights.npz",
                                             "*/MODEL_CARD.md"]},
    python_requires=">=3.11",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "tensorflow-datasets>=4.9",
        "absl-py>=2.0",
        "gin-config>=0.5",
        "numpy>=1.26",
        "Pillow>=10.1",       # text renderer; load_default(size) needs 10.1
        "matplotlib>=3.8",    # evaluation curves
        "tensorboard>=2.20",  # tf.summary needs it; TF 2.21 no longer installs it
        "tqdm>=4.66",         # progress bars (progress.py)
    ],
    extras_require={
        # The CT table's FBP and SART rows (classical_ct.py); the tests compare
        # against them and against scikit-image's textbook Shepp-Logan phantom.
        "classical": ["scikit-image>=0.22"],
        "test": ["pytest>=8", "scikit-image>=0.22"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        # The benchmark's jax group: the reference's framework timed in the same run
        # (on a GPU machine install jax[cuda12] instead).
        "compare": ["jax[cpu]>=0.4.30"],
    },
    entry_points={
        "console_scripts": [
            "tf-metainit-train=tf_metainit.cli.meta_train:run",
            "tf-metainit-evaluate=tf_metainit.cli.evaluate:run",
            "tf-metainit-interpolate=tf_metainit.cli.interpolate:run",
            "tf-metainit-appearance=tf_metainit.cli.appearance:run",
            "tf-metainit-export=tf_metainit.cli.export:run",
            "tf-metainit-benchmark=tf_metainit.cli.benchmark:run",
            "tf-metainit-fit=tf_metainit.cli.fit:run",
            "tf-metainit-fit-folder=tf_metainit.cli.fit_folder:run",
        ],
    },
)
