"""Student's t distribution with an integer number of degrees of freedom, in closed form (numpy
and scipy-free), for the prediction intervals of ``neurosel.shift.predict``.

P(|T| < t) for nu degrees of freedom, with theta = atan(t / sqrt(nu)) (Abramowitz and Stegun,
26.7.3-4): for odd nu, (2/pi) (theta + sin(theta) cos(theta) S) with
S = sum_{i=0}^{(nu-3)/2} prod_{m=1}^{i} (2m)/(2m+1) cos^{2i}(theta) (S = 0 for nu = 1); for even
nu, sin(theta) sum_{i=0}^{(nu-2)/2} prod_{m=1}^{i} (2m-1)/(2m) cos^{2i}(theta).
"""

from __future__ import annotations

import functools
import math


def t_cdf(t: float, dof: int) -> float:
    """P(T <= t) for T ~ Student t with ``dof`` >= 1 degrees of freedom."""
    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    theta = math.atan(abs(t) / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    term, series = 1.0, 0.0
    if dof % 2:
        for i in range((dof - 1) // 2):
            series += term
            term *= c2 * (2 * i + 2) / (2 * i + 3)
        inside = 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    else:
        for i in range(dof // 2):
            series += term
            term *= c2 * (2 * i + 1) / (2 * i + 2)
        inside = math.sin(theta) * series
    return 0.5 + math.copysign(inside / 2.0, t)


@functools.lru_cache(maxsize=256)
def t_quantile(q: float, dof: int) -> float:
    """The t with P(T <= t) = ``q`` (0 < q < 1), by bisection on ``t_cdf`` to 1e-10 (cached: a
    leave-one-condition-out evaluation asks for the same few quantiles many times)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q < 0.5:
        return -t_quantile(1.0 - q, dof)
    low, high = 0.0, 1.0
    while t_cdf(high, dof) < q:
        low, high = high, 2.0 * high
    while high - low > 1e-10 * max(1.0, high):
        mid = (low + high) / 2.0
        low, high = (mid, high) if t_cdf(mid, dof) < q else (low, mid)
    return (low + high) / 2.0
