"""Lawson's algorithm: the minimax (equal-ripple) weighted polynomial fit, by iteratively
reweighted least squares. Shared by the fitting scripts beside it."""
import numpy as np


def lawson_fit(basis, target, scale, iterations=300):
    """Coefficients c minimising max |basis @ c - target| * scale over the sample points.

    basis: [points, terms] matrix of the terms evaluated at each point; target: [points];
    scale: [points], the factor turning an error of the fitted function into the error that
    matters (for example into relative error of the final approximation)."""
    weights = np.ones_like(target)
    coefficients = None
    for _ in range(iterations):
        row_scale = np.sqrt(weights) * scale
        coefficients, *_ = np.linalg.lstsq(basis * row_scale[:, None], target * row_scale, rcond=None)
        error = np.abs(basis @ coefficients - target) * scale
        weights = weights * error
        weights /= weights.sum()
    return coefficients
