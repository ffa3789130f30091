"""How often the synthetic audit calls a target "not learned" (a warning) against the network's
true R², by the number of validation users: the false-alarm rate at the threshold and the power
below it (README, "How sure is a finding?"). Measures findings, not speed; asserts nothing.

    .venv/bin/python bench/bench_synthetic_evidence.py [--samples 100]

Each sample plants a validation set (2 weeks per user, half of the target's variance shared by
a user's weeks) and a prediction whose population R² is the row's value, then scores it as the
audit does (`score_target` with the users: a BCa interval over user-level resamples). About 20 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tests.unit.test_synthetic_evidence import audit_of  # noqa: E402

USERS = (10, 30, 100, 300)
TRUE_R2 = (0.5, 0.4, 0.25, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    print(f"share of {args.samples} samples with a SYNTHETIC_NOT_LEARNED warning (threshold 0.5)")
    print("true R²  " + "  ".join(f"{n:>4} users" for n in USERS))
    for r2 in TRUE_R2:
        shares = [np.mean([audit_of(n, 2, r2=r2, seed=s)[0].shown_not_learned
                           for s in range(args.samples)]) for n in USERS]
        print(f"{r2:7.2f}  " + "  ".join(f"{share:10.0%}" for share in shares), flush=True)


if __name__ == "__main__":
    main()
