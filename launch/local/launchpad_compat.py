"""The one place this project reaches into Launchpad's private API.

Checked against dm-launchpad 0.5.0. Its 'output_to_files' terminal writes each node's
output under a directory it reads from the module global
`launchpad.launch.run_locally.launch_local_output_to_files._LOGGING_DIR`, set once from
$LAUNCHPAD_LOGGING_DIR when the module is first imported; the public setting (the
environment variable) cannot move it per launch, and each launch logs into its own run
directory. tests/launch/local/test_launchpad_compat.py fails if the global goes away or
stops being read.
"""

import os


def set_node_log_dir(directory: os.PathLike) -> None:
  """Makes the next 'output_to_files' launch write its per-node files under `directory`."""
  # pylint: disable-next=g-import-not-at-top
  from launchpad.launch.run_locally import launch_local_output_to_files
  if not hasattr(launch_local_output_to_files, '_LOGGING_DIR'):
    raise RuntimeError('this Launchpad has no launch_local_output_to_files._LOGGING_DIR '
                       '(checked against dm-launchpad 0.5.0): see launch/local/launchpad_compat.py')
  launch_local_output_to_files._LOGGING_DIR = str(directory)  # pylint: disable=protected-access
