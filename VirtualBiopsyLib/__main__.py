"""``python -m VirtualBiopsyLib`` runs the ``virtual-biopsy`` command line."""

import sys

from VirtualBiopsyLib.cli import main

sys.exit(main())
