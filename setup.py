"""Installs the `seq2seq` and `ops` packages."""
import re

import setuptools

with open("seq2seq/__init__.py", encoding="utf-8") as f:
  VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setuptools.setup(
    name="seq2seq-engine",
    version=VERSION,
    description="A low-level TensorFlow 2 training engine for recurrent sequence models",
    packages=setuptools.find_packages(include=["seq2seq", "seq2seq.*", "ops", "benchmarks"]),
    package_data={"seq2seq.serve": ["static/*.html"],  # the chat page of --mode=serve
                  "ops": ["kernels/*.cc"]},  # built on first use (ops/native.py)
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.21",
        "numpy",
        "absl-py",
        "PyYAML",  # ChatterBot YAML conversations
        "chatterbot-corpus==1.3.3",  # the embedded default corpus (BSD licence)
        "zstandard>=0.22",  # Reddit's .zst dumps (long-window streams)
        "orjson>=3.9",  # parses dump lines ~15x faster than the json module
    ],
    extras_require={
        "test": ["pytest", "sacrebleu>=2.3", "matplotlib", "sentencepiece>=0.2",
                 "pillow"],  # reads the browser test's screenshot
        "subwords": ["sentencepiece>=0.2"],
        "bleu": ["sacrebleu>=2.3"],  # --decode_reference: corpus BLEU
        "plot": ["matplotlib"],  # --plot_attention: the attention heat map
        # --prepare_runner=beam; 2.78 pins protobuf<7, which TensorFlow 2.21 (>=6.31.1) accepts
        "beam": ["apache-beam==2.78.0"],
    },
)
