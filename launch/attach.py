"""`python -m launch.attach`: the robot-side command; it lives in `launch.robot.attach`."""

import sys

from launch.robot.attach import main

if __name__ == '__main__':
  sys.exit(main())
