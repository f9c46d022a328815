"""neurosel: pip-installable package; the pinned environment is requirements.txt."""

from setuptools import find_packages, setup

setup(
    name="neurosel",
    version="0.1.0",
    description="Hyper/hypo neuron analysis, pruning and selective unsupervised adaptation of CNN "
    "acoustic models, as Kaldi-style recipes",
    packages=find_packages(include=["neurosel", "neurosel.*"]),
    python_requires=">=3.10",
    install_requires=[],  # pinned in requirements.txt; the recipe installs them into .venv
    entry_points={"console_scripts": []},
)
