"""skewless: tabular data to a blessed, skew-free model on TensorFlow Serving, built on TFX."""

from pathlib import Path

from setuptools import setup

# The repository's top-level folders are the architecture; installed, they live under `skewless.`
# so that nothing claims generic top-level names such as `pipeline` or `serving`.
FOLDERS = ("skewless", "pipeline", "components", "transforms", "serving")


def _package_dirs() -> dict[str, str]:
    dirs = {}
    for folder in FOLDERS:
        for init in sorted(Path(folder).rglob("__init__.py")):
            parts = init.parent.parts
            name = ".".join(parts if folder == "skewless" else ("skewless", *parts))
            dirs[name] = init.parent.as_posix()
    return dirs


PACKAGE_DIRS = _package_dirs()

setup(
    name="skewless",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    package_dir=PACKAGE_DIRS,
    packages=list(PACKAGE_DIRS),
    install_requires=[
        "tfx[kfp]==1.16.0",
        "tf-keras",
        "tensorflow-serving-api",
        "click",
        "pyyaml",
        "pydantic>=2",
        "orjson",
        "aiohttp",
        "uvloop",  # the serving event loop (REST and gRPC front ends)
        "prometheus-client",
        "rich",
        "fastavro",  # Avro data (comes with apache-beam; imported directly)
        "ruamel.yaml",  # `skewless loadtest --write-config` keeps the config's comments
        "matplotlib",  # figures: statistics, training, evaluation, load tests
        "google-crc32c",  # request logs: TFRecord checksums (comes with the stack)
    ],
    extras_require={
        "dev": [
            "pytest",
            "pytest-timeout",
            "pytest-xdist",  # make test: two workers, one test file each at a time
            "hypothesis",
            "ruff",
            "kubernetes-validate",
            "nbclient",
            "nbformat",
            "ipykernel",
            "jupyterlab",
            "fastapi",  # benchmarks/fastapi_peer.py
            "uvicorn",
        ],
        # GPU utilisation and memory in `skewless loadtest` (NVML; needs an NVIDIA driver).
        "gpu": ["nvidia-ml-py"],
    },
    entry_points={"console_scripts": ["skewless=skewless.cli:main"]},
)
