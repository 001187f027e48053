"""The one-line verdict on a finding: a measure's 95% t-interval over SFT seeds against its
null, by the fixed rules of `RULES` (written into the report and docs/method.md).

Each headline measure has a null (`headjax.app.reproduce.seeds.HEADLINES`) and a side of it the
paper's claim lies on ("above" or "below"). The null's 95% point q is its one-sided 95% point
toward the paper's side (the 95th percentile of a null distribution for "above", the 5th for
"below"; a fixed reference value when the null is a single number). With the interval
[mean - half, mean + half] over seeds:

    holds                    the whole interval lies beyond q on the paper's side
    does not hold            the whole interval lies on the null's side of q (inside the null
                             or beyond it on the other side)
    undecided at this power  the interval contains q, or there are fewer than 2 seeds (no
                             interval over seeds)
"""

from __future__ import annotations

import math

HOLDS = "holds"
FAILS = "does not hold"
UNDECIDED = "undecided at this power"
SIDES = ("above", "below")

RULES = ("Verdicts: a measure's 95% t-interval over SFT seeds against its null's 95% point q on "
         "the paper's side (the null distribution's 95th percentile when the paper's claim is a "
         "larger value, its 5th when a smaller one; a fixed reference value when the null is one "
         "number). 'holds': the whole interval lies beyond q on the paper's side; 'does not "
         "hold': the whole interval lies on the null's side of q; 'undecided at this power': the "
         "interval contains q, or fewer than 2 seeds give no interval over seeds.")


def verdict(mean: float, half: float, null_point: float, side: str) -> str:
    """`HOLDS`, `FAILS` or `UNDECIDED` for an interval `mean ± half` (a NaN `half`: one seed)
    against the null's 95% point `null_point` on the paper's `side` of the null (`SIDES`)."""
    if side not in SIDES:
        raise ValueError(f"side: {side!r} not in {SIDES}")
    if not all(math.isfinite(x) for x in (mean, half, null_point)):
        return UNDECIDED
    sign = 1.0 if side == "above" else -1.0  # mirror "below" onto "above"
    near, far = sign * mean - half, sign * mean + half
    if near > sign * null_point:
        return HOLDS
    if far < sign * null_point:
        return FAILS
    return UNDECIDED
