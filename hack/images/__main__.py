"""``python3 hack/images [--import-to SOCKET] [NAMES...]``: build, cache and import the images (see images.py)."""

from __future__ import annotations

import sys

from images import main

sys.exit(main())
