"""Collect & Infer: a distributed actor-learner system for robot learning."""

import setuptools

setuptools.setup(
  name='collect-infer',
  version='0.1.0',
  description=(
    'Distributed collect-and-infer actor-critic (MPO family) on Acme, Reverb, Launchpad and JAX.'
  ),
  python_requires='>=3.10,<3.11',
  packages=setuptools.find_packages(
    include=['agents*', 'networks*', 'environments*', 'launch*', 'experiments*']
  ),
  # The loopback bind shim, compiled on first use (launch/loopback).
  package_data={'launch.loopback': ['shim.c'], 'environments': ['expert_references.json']},
  install_requires=[
    'dm-acme==0.4.0',
    'dm-launchpad==0.5.0',
    'dm-reverb==0.7.0',
    'tensorflow-cpu==2.8.4',
    'jax==0.6.2',
    'jaxlib==0.6.2',
    'dm-haiku==0.0.17',
    'optax==0.2.8',
    'dm_control==1.0.50',
    'mujoco==3.17.0',
    'gym==0.26.2',  # acme.wrappers imports it unconditionally
    'numpy==1.26.4',
    'grpcio',  # The robot gateway (launch/robot/gateway.py); TensorFlow pins its range.
    'dm-env',
    'dm-tree',
    'absl-py',
    'psutil',
    'portpicker',  # Ports for the gateway and Slurm steps, shared with Launchpad's picks.
    'pillow',  # The evaluator's GIFs (launch/nodes/videos.py).
  ],
  extras_require={
    'bench': ['matplotlib'],
    # Tests exercise the plotting, and read RLDS exports back with TFDS; `make test` runs
    # the tests that are not marked slow on pytest-xdist's workers.
    'test': ['pytest', 'pytest-xdist', 'matplotlib', 'tensorflow-datasets==4.9.0'],
    # `make lint` (configured in ruff.toml).
    'lint': ['ruff'],
  },
)
