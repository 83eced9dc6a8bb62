"""`python -m launch.loopback`: builds the loopback bind shim if needed and prints its path."""

import sys

from launch.loopback import main

sys.exit(main())
