#!/usr/bin/env python3
"""Fits Q in e^r = 1 + r + r^2 Q(r) on r in [-ln2/2, ln2/2] for gru_simd::activation's exponential.

Minimises the maximum relative error of 1 + r + r^2 Q(r) against exp(r) (float64) by Lawson's
iteratively reweighted least squares on 20001 Chebyshev points; reports the error after the
coefficients are rounded to f32.

Run: python3 gru-simd/tools/fit_exp_polynomial.py   (needs numpy only)
"""
import numpy as np

from minimax import lawson_fit

HALF_LN2 = np.log(2) / 2
DEGREE = 5  # coefficients of Q: r^2 .. r^6 overall

k = np.arange(20001)
r = -HALF_LN2 * np.cos(np.pi * k / k[-1])
r = r[np.abs(r) > 1e-5]
target = (np.exp(r) - 1 - r) / r**2
scale = r**2 / np.exp(r)  # relative error of the whole expression per unit error in Q
V = np.vander(r, DEGREE, increasing=True)
coef = lawson_fit(V, target, scale)

coef32 = coef.astype(np.float32)
approx = 1 + r + r**2 * (V @ coef32.astype(np.float64))
rel = np.abs(approx - np.exp(r)) / np.exp(r)
for i, c in enumerate(coef32):
    print(f"Q{i} = {c!r}")
print(f"max relative error with f32 coefficients: {rel.max():.3e} = {rel.max() / 2**-24:.3f} ulp at 2^-24")
