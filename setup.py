"""network-anomaly: real-time anomaly detection for network KPIs on Kafka + PyFlink.

Runtime versions are pinned: apache-flink 2.2.1 decides numpy/pandas/pyarrow (see
shared DESIGN.md "Versions that work together here"); torch and wandb are pinned beside it.
The full resolved set lives in constraints.txt and is what scripts/bootstrap.sh installs.
"""

from setuptools import find_packages, setup

RUNTIME = [
    "apache-flink==2.2.1",
    "torch==2.13.0",
    "numpy==2.1.3",
    "pandas==2.2.3",
    "pyarrow==16.1.0",
    "kafka-python==2.3.0",
    "wandb==0.31.0",
    "pydantic==2.14.4",
    "pyyaml==6.0.4",
    "click==8.5.1",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "scikit-learn==1.9.1",
    "onnx==1.22.0",  # torch.onnx.export (TorchScript-based exporter); 1.23 needs a newer protobuf than beam allows
    "onnxruntime==1.32.0",
]

DEV = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "ruff==0.17.6",
    "jsonschema==4.26.0",
]

setup(
    name="network-anomaly",
    version="0.1.0",
    description="Real-time anomaly detection for network KPIs: Kafka -> PyFlink -> TorchScript autoencoder",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["netanomaly", "netanomaly.*", "flink_job", "flink_job.*", "model", "model.*"]),
    package_data={"netanomaly": ["infra/pom.xml", "infra/log4j2.properties"]},
    include_package_data=True,
    install_requires=RUNTIME,
    extras_require={"dev": DEV},
    entry_points={"console_scripts": ["netanomaly=netanomaly.cli:main"]},
)
