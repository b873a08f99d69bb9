"""``python -m bench [--quick] [--orthanc-data DIR]`` (``make bench`` / ``make bench-quick``): the
performance issue's targets in one table (bench/targets.py; its options pass through).

The detailed benchmarks stay runnable on their own: ``python -m bench.store`` (ingest per
receiver), ``python -m bench.query`` (C-FIND and C-MOVE at 10k-1M), ``bench.load``,
``bench.soak_crash``, ``bench.fuzz``.
"""

from __future__ import annotations

import sys

from bench import targets


def main() -> None:
    targets.main(sys.argv[1:])


if __name__ == "__main__":
    main()
