"""`nemo-migrate verify OUT --load` on many converted checkpoints in one process (megatron-core imported once).

For each checkpoint: verify's layout/index/read-back checks, then the load check (megatron-core builds the model
the checkpoint's context describes, on CPU, loads it strictly) with a forward pass on the reference's tokens, and
the logits compared with the NeMo 1.0 logits stored in the reference .pt (the oracle's thresholds: max|d| <= 0.02,
argmax agreement >= 0.8). This is the library path the CLI takes (`verify_checkpoint`, then `check_load`), minus
the option parsing, which the test suite covers.

Usage (project venv): python load_many.py RESULTS.tsv CKPT=REFERENCE.pt[=anything ...] ...
Writes one line per checkpoint to RESULTS.tsv: name, OK/FAIL, max|d| (or -), seconds, detail. Exit 1 if any failed.
"""
import sys
import time
from pathlib import Path

import torch

from migrator.convert.load_check import check_load
from migrator.convert.verify import verify_checkpoint
from migrator.errors import MigratorError


def check(ckpt: Path, reference: Path) -> tuple[bool, str, str]:
    ref = torch.load(reference, weights_only=True)
    report = verify_checkpoint(ckpt)
    if not report.ok:
        return False, "-", "; ".join(report.problems[:3])
    result = check_load(ckpt, ref["tokens"][0].tolist())
    if result.problems:
        return False, "-", "; ".join(result.problems[:3])
    if result.logits is None:
        return False, "-", "; ".join(result.notes)
    logits = result.logits.float()
    d = (logits - ref["logits"]).abs().max().item()
    agree = (logits.argmax(-1) == ref["logits"].argmax(-1)).float().mean().item()
    forward = next(c for c in result.checks if c.startswith("forward:"))
    ok = d <= 0.02 and agree >= 0.8
    return ok, f"{d:.5f}", f"argmax {agree:.2f}; {forward.split(' -> ', 1)[1]}"


def main() -> int:
    results, pairs = Path(sys.argv[1]), sys.argv[2:]
    failed = 0
    with results.open("w") as out:
        for pair in pairs:
            ckpt, reference = pair.split("=")[:2]
            start = time.time()
            try:
                ok, maxd, detail = check(Path(ckpt), Path(reference))
            except MigratorError as error:
                ok, maxd, detail = False, "-", f"error: {error}"
            failed += not ok
            out.write(f"{Path(ckpt).name}\t{'OK' if ok else 'FAIL'}\t{maxd}\t{time.time() - start:.1f}s\t{detail}\n")
            out.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
