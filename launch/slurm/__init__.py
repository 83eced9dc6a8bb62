"""Running the same Launchpad program on a Slurm cluster.

`launch_type='slurm'` submits one batch job. Its batch step runs the
supervisor (`launch.slurm.supervise`), which starts one job step per node of
the program (`launch.slurm.node`), each with its group's resource request.
Nodes find each other through an address book in the shared run directory.
"""
