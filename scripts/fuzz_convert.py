"""Run the converter's hostile-input campaign longer than CI does (tests/campaign/convert_fuzz.py).

    python scripts/fuzz_convert.py --seed 1 --cases 200 [--minutes 30] [--work DIR] [-v]

Every case is a real `nemo-migrate convert` (or `verify`) subprocess on a damaged checkpoint made from the shared
tiny Llama fixtures (../shared/fixtures/nemo1). Prints tried / clean / defects / peak RSS per group (archives,
indexes, zarr, metadata.json, context) and the first defects; exit 1 if any."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.campaign import convert_fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=200, help="cases per group")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    if not (convert_fuzz.FIXTURES / "tiny_llama_torch_dist.nemo").is_file():
        print(f"{convert_fuzz.FIXTURES}: the shared fixtures are missing", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fuzz_convert.", dir=args.work) as work:
        groups = convert_fuzz.run(args.seed, {name: args.cases for name in convert_fuzz.GROUPS}, Path(work),
                                  budget_s=args.minutes * 60 if args.minutes else None,
                                  log=(lambda line: print(line, flush=True)) if args.verbose else None)
    print(convert_fuzz.report(groups, limit=20))
    return 1 if any(g.defects for g in groups.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
