"""Run the lint-side mutation campaign longer than CI does (tests/campaign/lint_fuzz.py).

    python scripts/fuzz_lint.py --seed 1 --yaml 5000 --python 1500 [--minutes 30]

Prints tried / clean / defects per group and the first defects; exit 1 if any."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.campaign import lint_fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--yaml", type=int, default=5000, help="mutated YAML configs")
    parser.add_argument("--python", type=int, default=1500, help="mutated Python scripts")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long")
    args = parser.parse_args()
    groups = lint_fuzz.run(args.seed, args.yaml, args.python,
                           budget_s=args.minutes * 60 if args.minutes else None)
    print(lint_fuzz.report(groups))
    return 1 if any(g.defects for g in groups.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
