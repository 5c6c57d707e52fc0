#!/usr/bin/env python3
"""Fits the small-argument tanh polynomial used by gru_simd::activation::tanh.

For 0 <= a < SWITCH, tanh(a) = a + a^3 * P(a^2). P is fitted to minimise the maximum relative
error of a + a^3 P(a^2) against tanh(a) (computed in float64) on [0, SWITCH], by Lawson's
iteratively reweighted least squares on 20001 Chebyshev points, then the coefficients are
rounded to f32 and the error of the rounded polynomial is reported in f64 arithmetic.

Run: python3 gru-simd/tools/fit_tanh_polynomial.py   (needs numpy only)
"""
import numpy as np

from minimax import lawson_fit

SWITCH = np.float32(0.5493164)  # just above atanh(0.5): above it tanh >= 0.5 and 1 - 2/(1+e^2a) loses no bits
DEGREE = 5                      # terms in P: a^3 .. a^(2*DEGREE+1)

k = np.arange(20001)
a = 0.5 * float(SWITCH) * (1 - np.cos(np.pi * k / k[-1]))   # Chebyshev points on [0, SWITCH]
a = a[a > 1e-4]
s = a * a
target = (np.tanh(a) - a) / a**3           # what P must equal
# The relative error of a + a^3 P is a^3 (P - target) / tanh(a); weight rows accordingly.
scale = a**3 / np.tanh(a)
V = np.vander(s, DEGREE, increasing=True)
coef = lawson_fit(V, target, scale, iterations=200)

coef32 = coef.astype(np.float32)
poly = V @ coef32.astype(np.float64)
rel = np.abs(a + a**3 * poly - np.tanh(a)) / np.tanh(a)
print(f"switch = {SWITCH!r}")
for i, c in enumerate(coef32):
    print(f"C{2 * i + 3} = {c!r}  ({c.item().hex()})")
print(f"max relative error of the f32-rounded polynomial: {rel.max():.3e} "
      f"= {rel.max() / 2**-24:.3f} ulp at 2^-24")
