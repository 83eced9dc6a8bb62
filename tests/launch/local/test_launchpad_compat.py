"""The private Launchpad global launch.local.launchpad_compat sets is still there and still read."""

from launchpad.launch.run_locally import launch_local_output_to_files

from launch.local.launchpad_compat import set_node_log_dir


def test_node_log_dir_is_the_global_launchpad_writes_under(tmp_path):
  before = launch_local_output_to_files._LOGGING_DIR  # pylint: disable=protected-access
  try:
    set_node_log_dir(tmp_path / 'nodes')
    assert launch_local_output_to_files._LOGGING_DIR == str(tmp_path / 'nodes')  # pylint: disable=protected-access
    # The function that opens the per-node files reads the global when it runs.
    launch = launch_local_output_to_files.launch_and_output_to_files
    assert '_LOGGING_DIR' in launch.__code__.co_names
  finally:
    launch_local_output_to_files._LOGGING_DIR = before  # pylint: disable=protected-access
