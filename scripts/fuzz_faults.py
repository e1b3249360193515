"""Run the I/O fault campaign of `nemo-migrate convert` longer than CI does (tests/campaign/io_faults.py).

    python scripts/fuzz_faults.py --seed 1 --cases 150 [--routes copy stream-zarr ...] [--minutes 20] [--jobs 2]

Every case is a real `nemo-migrate convert` process with one injected fault (the N-th call of an I/O function fails
with an errno or returns a short or empty count). Prints tried / fired / clean / defects per route and the defects;
exit 1 if any. Needs the shared fixtures (../shared next to the checkout)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.campaign import io_faults  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=150, help="cases per route")
    parser.add_argument("--routes", nargs="*", default=sorted(io_faults.ROUTES), choices=sorted(io_faults.ROUTES))
    parser.add_argument("--minutes", type=float, default=None, help="stop drawing new cases after this long")
    parser.add_argument("--jobs", type=int, default=None, help="processes at once (default: the CPU count)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nemo-migrate-faults-") as scratch:
        groups = io_faults.run_campaign(args.work or Path(scratch), seed=args.seed,
                                        cases_per_route={r: args.cases for r in args.routes},
                                        budget_s=args.minutes * 60 if args.minutes else None, jobs=args.jobs,
                                        log=lambda line: print(line, flush=True))
    print(io_faults.report(groups))
    return 1 if any(g.defects for g in groups.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
