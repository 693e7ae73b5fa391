"""Installs the ``prime`` package and builds its cffi extension from native/."""

from setuptools import find_packages, setup

setup(
    name="prime-bft",
    version="0.1.0",
    description="Prime: Byzantine replication under attack (Python implementation)",
    python_requires=">=3.11",
    packages=find_packages(include=["prime", "prime.*"]),
    setup_requires=["cffi>=1.16"],
    cffi_modules=["prime/crypto/_build.py:ffi"],
    install_requires=[
        "cffi>=1.16",
        "pynacl>=1.5",
        "pyzmq>=25",
        "msgpack>=1.0",
        "zfec>=1.5",
        "orjson>=3.9",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.2", "pytest-xdist>=3.5", "hypothesis>=6.100", "atheris>=2.3"],
        "plot": ["matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": [
            "prime-gen-keys=prime.cli.gen_keys:main",
            "prime=prime.cli.prime:main",
            "prime-client=prime.cli.client:main",
            "prime-cluster=prime.cli.cluster:main",
        ]
    },
)
