"""Run the SIGKILL campaign of `nemo-migrate convert` longer than CI does (tests/campaign/kill_convert.py).

    python scripts/fuzz_kill.py --seed 1 --cases 300 [--minutes 20] [--keep DIR]

Converts the NeMo-made fixtures in ../shared/fixtures/nemo1 (to NeMo 2.0 and Megatron-Bridge; fresh and --force
over an existing output), kills each run with SIGKILL at a random point (and one time in three the run that
recovers from it), then checks that no incomplete output looks complete, that --force never loses both the old and the new output, and that the next run
recovers and succeeds; also kills a --force run before each step of the replacement, on both routes.
Prints tried / killed / clean / defects per group and the first defects; exit 1 if any."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.campaign import kill_convert  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=300, help="random kills")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this long")
    parser.add_argument("--fixtures", type=Path, default=ROOT.parent / "shared" / "fixtures" / "nemo1")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the defective cases")
    args = parser.parse_args()
    fixtures = {name: args.fixtures / f"{name}.nemo" for name in kill_convert.FIXTURES}
    missing = [str(p) for p in fixtures.values() if not p.is_file()]
    if missing:
        parser.error(f"missing fixtures: {', '.join(missing)}")
    root = args.keep or Path(tempfile.mkdtemp(prefix="fuzz-kill-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        groups = kill_convert.run(args.seed, args.cases, root / "random", fixtures,
                                  budget_s=args.minutes * 60 if args.minutes else None)
        template, _, _ = kill_convert.Templates(root / "steps", fixtures).get(kill_convert.FIXTURES[0])
        for exchange in (True, False):
            name = "steps (exchange)" if exchange else "steps (two renames)"
            groups[name] = kill_convert.kill_at_steps(root / ("exchange" if exchange else "renames"),
                                                      fixtures[kill_convert.FIXTURES[0]], template, exchange)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(kill_convert.report(groups))
    return 1 if any(g.defects for g in groups.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
