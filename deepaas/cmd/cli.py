"""``deepaas-cli``: run a plugin's methods from the command line (placeholder).

The full command (one option per plugin field, output files) is tracked in
the training/CLI issue; until then it says so instead of pretending.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print(
        "deepaas-cli is not available yet in this development version; "
        "use deepaas-run and the HTTP API.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
