"""sama-rt: fast runtime for the SAMA-14B instruction-guided video editor."""
from setuptools import setup

# `kernels`, `export` and `engines` live at the top of the repository (the layout users
# asked for) but install as sub-packages of sama_rt: `kernels` is also an unrelated PyPI
# package, so it must never be importable as a top-level name.
PACKAGES = {
    "sama_rt": "sama_rt",
    "sama_rt.models": "sama_rt/models",
    "sama_rt.video": "sama_rt/video",
    "sama_rt.parallel": "sama_rt/parallel",
    "sama_rt.acceleration": "sama_rt/acceleration",
    "sama_rt.kernels": "kernels",
    "sama_rt.export": "export",
    "sama_rt.engines": "engines",
}

setup(
    name="sama-rt",
    version="0.1.0",
    description="Fast runtime for SAMA-14B instruction-guided video editing",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    install_requires=[
        "torch>=2.4",
        "numpy",
        "safetensors",
        "sentencepiece",
        "ftfy",
        "av>=18",
        "pillow",
        "tqdm",
    ],
    extras_require={
        "export": ["onnx>=1.16", "onnxruntime", "onnxscript", "polygraphy", "onnx-graphsurgeon"],
        "triton": ["triton>=3.2"],
        "tensorrt": ["tensorrt-cu13"],
        # transformers: only to compare the prompt tokenizer with the HF T5 tokenizer the release uses.
        "dev": ["pytest", "onnx>=1.16", "onnxruntime", "onnxscript", "triton>=3.2", "transformers>=4.40,<5"],
    },
    entry_points={"console_scripts": ["sama-rt = sama_rt.cli:main"]},
)
