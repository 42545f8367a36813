"""Fréchet distance between Gaussians, with the matrix square root computed in torch.

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^{1/2})

S_1 S_2 is not symmetric, but it is similar to the symmetric positive semi-definite matrix
M = S_1^{1/2} S_2 S_1^{1/2} (conjugate by S_1^{1/2}), so both have the same eigenvalues and
tr((S_1 S_2)^{1/2}) = sum_i sqrt(lambda_i(M)). Everything is an eigendecomposition of a
symmetric matrix (torch.linalg.eigh), which is stable and real, unlike a general sqrtm on the
non-symmetric product. M is symmetrised, (M + M^T) / 2, before eigh to remove rounding
asymmetry, and eigenvalues below zero (rounding of a PSD matrix) are clamped to zero.
"""

from __future__ import annotations

import torch


def _check_square(fn: str, name: str, matrix: torch.Tensor) -> None:
    if (
        not isinstance(matrix, torch.Tensor)
        or matrix.dim() != 2
        or matrix.shape[0] != matrix.shape[1]
    ):
        shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix)
        raise ValueError(f"fastgen.metrics.{fn}: {name} expected a square 2-D tensor, got {shape}")


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The principal square root of a symmetric positive semi-definite matrix [D, D].

    Computed as V diag(sqrt(max(lambda, 0))) V^T from eigh of (A + A^T) / 2, in float64.

    Args:
        matrix: [D, D], symmetric PSD (to rounding), any float dtype and device.
    Returns:
        Tensor [D, D], float64, on matrix's device.
    """
    _check_square("sqrtm_psd", "matrix", matrix)
    a = matrix.to(torch.float64)
    eigenvalues, eigenvectors = torch.linalg.eigh((a + a.T) / 2)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def trace_sqrt_product(sigma_1: torch.Tensor, sigma_2: torch.Tensor) -> torch.Tensor:
    """tr((S_1 S_2)^{1/2}) for symmetric PSD S_1, S_2 [D, D], as a float64 scalar tensor.

    Args:
        sigma_1: [D, D], symmetric PSD, any float dtype and device.
        sigma_2: [D, D], symmetric PSD, any float dtype (moved to sigma_1's device).
    Returns:
        A 0-d float64 tensor on sigma_1's device.
    """
    _check_square("trace_sqrt_product", "sigma_1", sigma_1)
    _check_square("trace_sqrt_product", "sigma_2", sigma_2)
    if sigma_1.shape != sigma_2.shape:
        raise ValueError(
            "fastgen.metrics.trace_sqrt_product: sigma_2 expected shape "
            f"{tuple(sigma_1.shape)} (sigma_1's), got {tuple(sigma_2.shape)}"
        )
    root_1 = sqrtm_psd(sigma_1)
    product = root_1 @ sigma_2.to(root_1) @ root_1
    eigenvalues = torch.linalg.eigvalsh((product + product.T) / 2)
    return eigenvalues.clamp(min=0).sqrt().sum()


def frechet_distance(
    mu_1: torch.Tensor, sigma_1: torch.Tensor, mu_2: torch.Tensor, sigma_2: torch.Tensor
) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu_1, S_1) and N(mu_2, S_2).

    mu [D], sigma [D, D]; any float dtype and device (computed in float64). This is FID when
    the moments are those of Inception features, and "digits-FID" with the digits classifier.

    Args:
        mu_1: mean of the first set's features, [D].
        sigma_1: covariance of the first set's features, [D, D], symmetric PSD.
        mu_2: mean of the second set's features, [D].
        sigma_2: covariance of the second set's features, [D, D], symmetric PSD.
    Returns:
        d^2 as a Python float, >= 0 (a rounding-negative value is clamped to 0); FID is this
        squared distance, no square root taken.
    """
    if mu_1.dim() != 1 or mu_1.shape != mu_2.shape:
        raise ValueError(
            "fastgen.metrics.frechet_distance: mu_1 and mu_2 expected 1-D tensors of one shape, "
            f"got {tuple(mu_1.shape)} and {tuple(mu_2.shape)}"
        )
    if sigma_1.shape != (mu_1.shape[0],) * 2:
        raise ValueError(
            f"fastgen.metrics.frechet_distance: sigma_1 expected shape {(mu_1.shape[0],) * 2}, "
            f"got {tuple(sigma_1.shape)}"
        )
    mu_1 = mu_1.to(torch.float64)
    mu_2 = mu_2.to(mu_1)
    sigma_1 = sigma_1.to(mu_1)
    sigma_2 = sigma_2.to(mu_1)
    diff = mu_1 - mu_2
    distance = (
        diff.dot(diff)
        + sigma_1.trace()
        + sigma_2.trace()
        - 2 * trace_sqrt_product(sigma_1, sigma_2)
    )
    # Rounding can make a distance of (near) zero come out slightly negative.
    return max(float(distance), 0.0)
