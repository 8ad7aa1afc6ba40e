import sys

from spatialboost.cli import main

sys.exit(main())
