"""``python3 hack/cluster [build|up|down|status|kubeconfig]``: the local control plane (see boot.py).

With ``KIND=1`` (and a Docker engine) ``up``/``down`` manage a kind cluster instead, writing the kubeconfig to the
same path, so everything downstream works unchanged.
"""

import os
import sys

from boot import default_workdir, main
from kind import kind_main

if __name__ == "__main__":
    if os.environ.get("KIND", "") not in ("", "0"):
        sys.exit(kind_main(sys.argv[1:], default_workdir()))
    sys.exit(main(sys.argv[1:]))
