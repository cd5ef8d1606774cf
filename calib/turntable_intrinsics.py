"""Lab calibration script: ``startrack calib intrinsics`` (run with --help for the options and an example).

The mathematics lives in :mod:`startrack.calibration`; this file only hands its arguments over.
"""

import sys

from startrack.cli import main

if __name__ == "__main__":
    sys.exit(main(["calib", "intrinsics", *sys.argv[1:]]))
