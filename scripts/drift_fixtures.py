#!/usr/bin/env python3
"""Expected values of the drift statistics, computed with scipy/numpy.

Writes tests/fixtures/drift/stats.json, read by the drift unit tests.
Regenerate with:  pip install scipy numpy && python3 scripts/drift_fixtures.py
"""
import json
import pathlib

import numpy as np
import scipy
from scipy import stats

rng = np.random.default_rng(20181125)
cases = []


def add(name, ref, cur, edges):
    ref = np.asarray(ref, dtype=float)
    cur = np.asarray(cur, dtype=float)
    ks = stats.ks_2samp(ref, cur, method="asymp")
    n, m = len(ref), len(cur)
    en = n * m / (n + m)
    # PSI over the bins split at `edges` (right-closed bins, as the worker uses).
    rc = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=len(edges) + 1)
    cc = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=len(edges) + 1)
    rs = np.maximum(rc / rc.sum(), 1e-4)
    cs = np.maximum(cc / cc.sum(), 1e-4)
    cases.append(
        {
            "name": name,
            "reference": ref.tolist(),
            "current": cur.tolist(),
            "edges": list(map(float, edges)),
            "reference_counts": rc.tolist(),
            "current_counts": cc.tolist(),
            "ks_statistic": float(ks.statistic),
            "ks_pvalue_kstwobign": float(stats.kstwobign.sf(np.sqrt(en) * ks.statistic)),
            "ks_pvalue_scipy": float(ks.pvalue),
            "wasserstein": float(stats.wasserstein_distance(ref, cur)),
            "psi": float(np.sum((cs - rs) * np.log(cs / rs))),
        }
    )


ref = rng.normal(50, 10, 400)
add("normal_same", ref, rng.normal(50, 10, 300), np.quantile(ref, np.arange(1, 10) / 10))
add("normal_shifted", ref, rng.normal(53, 10, 300), np.quantile(ref, np.arange(1, 10) / 10))
amt = rng.lognormal(3.5, 0.6, 500)
add("amount_x1.5", amt, rng.lognormal(3.5, 0.6, 350) * 1.5, np.quantile(amt, np.arange(1, 10) / 10))
cnt = rng.poisson(3, 500)
add("counts_with_ties", cnt, rng.poisson(3.4, 450), np.unique(np.quantile(cnt, np.arange(1, 10) / 10)))

binary = []
for ones, m, p in [(60, 100, 0.5), (1800, 10000, 0.174), (2600, 10000, 0.174), (3, 1000, 0.0056)]:
    r = stats.chisquare([ones, m - ones], [m * p, m * (1 - p)])
    binary.append({"ones": ones, "m": m, "p": p, "chi2": float(r.statistic), "pvalue": float(r.pvalue)})

kolmogorov = [{"x": x, "sf": float(stats.kstwobign.sf(x))} for x in [0.1, 0.19, 0.25, 0.5, 0.8, 1.0, 1.36, 2.0, 3.0]]

out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/drift/stats.json"
out.write_text(
    json.dumps(
        {
            "generated_by": f"scripts/drift_fixtures.py (scipy {scipy.__version__}, numpy {np.__version__})",
            "two_sample": cases,
            "binary": binary,
            "kolmogorov": kolmogorov,
        },
        indent=1,
    )
    + "\n"
)
print(out)
