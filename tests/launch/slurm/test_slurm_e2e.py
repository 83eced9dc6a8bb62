"""The program on a real Slurm cluster (munged, slurmctld, slurmd on this machine).

The cluster is installed from Debian's packages if missing (the machines run as
root) and started in a private directory; the tests skip, saying why, only
where that is impossible.
"""

import json
import re
import subprocess
import sys
import time
import warnings

import pytest

from launch.checkpointing import Checkpointer
from tests.e2e_util import ROOT, read_counts, wait_for
from tests.fakes import TINY
from tests.launch.slurm.slurm_cluster import SlurmCluster, ensure_installed

pytestmark = pytest.mark.slow

# Small memory requests: the test node advertises what the steps ask for, not more.
SMALL = [
  '--slurm',
  'replay.mem_gb=1',
  '--slurm',
  'learner.mem_gb=2',
  '--slurm',
  'actor.mem_gb=1',
  '--slurm',
  'evaluator.mem_gb=1',
  '--slurm',
  'counter.mem_gb=0.5',
  '--slurm',
  'gateway.mem_gb=0.5',
]
GROUP_LOGS = [
  'replay_0',
  'counter_0',
  'learner_0',
  'gateway_0',
  'actor_0',
  'evaluator_0',
]


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  why = ensure_installed()
  if why:
    pytest.skip(f'no Slurm cluster for this test: {why}')
  # Two compute nodes of 4 CPUs in their own network namespaces: the 8 CPUs of a
  # tiny experiment's steps span both, so nodes reach each other by host address.
  try:
    c = SlurmCluster(tmp_path_factory.mktemp('slurm'), nodes=2, cpus=4).start()
  except RuntimeError as e:
    warnings.warn(f'two-node Slurm cluster failed ({e}); testing on one node', stacklevel=1)
    c = SlurmCluster(tmp_path_factory.mktemp('slurm1')).start()
  yield c
  c.stop()


def _cli(cluster, *args, timeout=600):
  return subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.collect_infer',
      '--launch',
      'slurm',
      '--bind',
      'all',
      *args,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=cluster.env(),
  )


def _job_ids(text):
  return re.findall(r'submitted job (\d+)', text)


def test_scancel_stops_every_step_then_a_resubmission_resumes_and_ends_by_itself(cluster, tmp_path):
  run = tmp_path / 'run'
  # One actor: every node a step still spans both hosts (7 CPUs on two nodes of 4), and a
  # second actor would only cost this 2-core machine its imports, twice.
  done = _cli(
    cluster, '--run_dir', str(run), '--max_actor_steps', '10000000', '--num_actors', '1',
    *TINY, *SMALL,
  )  # fmt: skip
  assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
  job = _job_ids(done.stdout)[0]
  assert f'scancel {job}' in done.stdout and f'job-{job}.log' in done.stdout
  log = run / 'logs' / 'slurm' / f'job-{job}.log'
  # The resubmission's budget below counts from the actors' steps.
  wait_for(
    lambda: (
      read_counts(run).get('learner_steps', 0) > 50 and read_counts(run).get('actor_steps', 0) > 0
    ),
    300,
    'the learner and the actors to make progress on Slurm',
  )
  # Every node runs as its own step of the job, on a Slurm node, not on localhost.
  used = set()
  for label in GROUP_LOGS:
    text = (run / 'logs' / 'slurm' / job / label).read_text()
    found = re.search(rf'\[slurm\] {label} is step \d+ of job {job} on node (\S+)', text)
    assert found and found.group(1) in cluster.nodes, text[-2000:]
    used.add(found.group(1))
  if len(cluster.nodes) > 1:
    assert len(used) > 1, f'every step ran on {used}: the test did not cross hosts'
  book = {
    p.stem: json.loads(p.read_text())['address']
    for p in (run / 'slurm' / job / 'addresses').glob('*.json')
  }
  assert sorted(book) == ['counter', 'gateway', 'learner', 'replay']
  assert all(a.rpartition(':')[0] in cluster.nodes for a in book.values()), book
  published = json.loads((run / 'addresses.json').read_text())
  assert published['learner'] == book['learner'] and published['gateway'] == book['gateway']
  assert (run / 'gateway.token').stat().st_mode & 0o777 == 0o600
  # A second submission of a run that is still running is refused.
  busy = _cli(cluster, '--run_dir', str(run))
  assert busy.returncode == 2 and f'already used by Slurm job {job}' in busy.stderr

  subprocess.run(['scancel', job], env=cluster.env(), check=True)
  start = time.time()
  wait_for(
    lambda: (
      subprocess.run(
        ['squeue', '-h', '-j', job], env=cluster.env(), capture_output=True, text=True
      ).stdout.strip()
      == ''
    ),
    60,
    'the cancelled job to leave the queue',
  )
  assert time.time() - start < 45
  text = log.read_text()
  final = re.search(r'\[learner\] stopped at step (\d+); final checkpoint', text)
  assert final, text[-4000:]
  step1 = int(final.group(1))
  assert Checkpointer(run / 'checkpoints').all_steps()[-1] == step1
  assert '[replay] final checkpoint' in text and 'the job was cancelled' in text
  assert not (run / 'addresses.json').exists()

  budget = read_counts(run)['actor_steps'] + 1000
  again = _cli(cluster, '--run_dir', str(run), '--max_actor_steps', str(budget), '--follow')
  out = again.stdout + again.stderr
  assert again.returncode == 0, out[-5000:]
  job2 = _job_ids(out)[0]
  assert f'resumed from checkpoint at learner step {step1}' in out, out[-3000:]
  assert re.search(r"restored table sizes \{[^}]*'priority_table': [1-9]", out), out[-3000:]
  assert 'ended (the program stopped itself (budget spent))' in out
  counts = read_counts(run)
  assert counts['actor_steps'] >= budget and counts['learner_steps'] > step1, counts
  assert Checkpointer(run / 'checkpoints').all_steps()[-1] > step1
  assert (run / 'slurm' / job2 / 'exit_code').read_text().strip() == '0'
  assert (
    subprocess.run(
      ['squeue', '-h', '-j', job2], env=cluster.env(), capture_output=True, text=True
    ).stdout.strip()
    == ''
  ), 'the job did not leave the queue'


def test_a_partition_the_cluster_lacks_is_refused_clearly(cluster, tmp_path):
  done = _cli(cluster, '--run_dir', str(tmp_path / 'run'), '--slurm', 'partition=nosuchpart')
  assert done.returncode == 2
  assert 'sbatch refused the job' in done.stderr and 'nosuchpart' in done.stderr, done.stderr
  huge = _cli(cluster, '--run_dir', str(tmp_path / 'run2'), '--slurm', 'learner.mem_gb=100000')
  assert huge.returncode == 2 and 'learner.mem_gb' in huge.stderr, huge.stderr
