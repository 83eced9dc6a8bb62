"""Throughput benchmarks, one module per benchmark (run them with
`python -m experiments.throughput_benchmark`, whose --help explains each figure).

`timing` times each figure against its ceiling and writes the results; `in_process`
holds the program's pieces the actor, replay and learner benchmarks run in one
process; `program` runs the real program and polls it (scaling, e2e).
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
