"""``python -m bench [--quick]``: every benchmark, one table each."""

from __future__ import annotations

import sys

from bench import query, store


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    store.main(["--count", "200", "--small", "300", "--repeat", "1"] if quick else [])
    query.main(["--quick"] if quick else [])


if __name__ == "__main__":
    main()
