"""Random factors for T-Nets trained from scratch (:meth:`TensorMethod.random
<tcompress.methods.base.TensorMethod.random>`): the building blocks each method's initialisation
is made of.

Every function draws from the ``generator`` it is given (never from the global one), in float64,
and returns the requested dtype.

- :func:`balanced_orthonormal`: a D x R matrix with orthonormal columns whose rows all have the
  same norm, sqrt(R / D). A Tucker factor of this kind gives every index of its mode the same
  share of the tensor's variance: every block kernel of the T-Net is then as large as any other,
  where Haar-random orthonormal columns give the rows of a small mode (a grid mode of 2 to 4, the
  3 rows of a kernel mode) squared norms anywhere between 0 and 1.
- :func:`random_orthonormal`: Haar-random orthonormal rows (a wide matrix) or columns (a tall
  one).
- :func:`norm_preserving`: the same, scaled so that ``x @ Q`` keeps the squared norm of any ``x``
  (a wide matrix) or of an isotropic ``x`` on average (a tall one).
- :func:`random_cores`: the cores of a train or a ring (R_{k-1}, D_k, R_k) whose every block
  kernel (the contraction of the grid cores at one index with the kernel cores) has a chosen
  norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def random_orthonormal(m: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(m, n), Haar-distributed: orthonormal rows when ``m <= n``, orthonormal columns
    otherwise (float64)."""
    tall = max(m, n), min(m, n)
    gaussian = torch.randn(*tall, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    # The signs of R's diagonal make the distribution Haar (QR alone favours some signs).
    q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)
    return q if m >= n else q.t()


def norm_preserving(m: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(m, n) with ``||x Q|| = ||x||`` for every row vector ``x`` of size m when ``m <= n``
    (orthonormal rows), and ``E ||x Q||^2 = ||x||^2`` for isotropic ``x`` otherwise (orthonormal
    columns scaled by sqrt(m / n)); float64."""
    return random_orthonormal(m, n, generator) * math.sqrt(max(1.0, m / n))


def harmonic_frame(d: int, r: int, frequencies: Sequence[int] | None = None) -> torch.Tensor:
    """(d, r) with orthonormal columns, every row of squared norm r / d exactly: the columns are
    sampled harmonics of the d points, the constant 1/sqrt(d), the alternating (-1)^i / sqrt(d)
    (d even) and pairs sqrt(2/d) (cos, sin)(2 pi f i / d) for frequencies 0 < f < d / 2, each of
    which adds the same amount to every row (a pair: 2/d; a single column: 1/d). An odd r takes
    the constant and (r - 1) / 2 pairs; an even r takes r / 2 pairs, or both single columns and
    every pair when there are not enough pairs (r = d, d even). ``frequencies`` picks the pairs'
    (default: the lowest). Float64."""
    if not 1 <= r <= d:
        raise ValueError(f"a frame of {r} columns in {d} dimensions; expected 1 <= r <= d")
    i = torch.arange(d, dtype=torch.float64)
    n_pairs = (d - 1) // 2
    columns = []
    if r % 2 or r // 2 > n_pairs:
        columns.append(torch.full((d,), 1 / math.sqrt(d), dtype=torch.float64))
    if r % 2 == 0 and r // 2 > n_pairs:  # r = d, d even: the alternating column too
        columns.append((1 - 2 * (i % 2)) / math.sqrt(d))
    pairs = (r - len(columns)) // 2
    if frequencies is None:
        frequencies = range(1, pairs + 1)
    if len(frequencies) != pairs or not all(0 < f <= n_pairs for f in frequencies):
        raise ValueError(
            f"frequencies {list(frequencies)}; expected {pairs} distinct ones in 1..{n_pairs}"
        )
    for f in frequencies:
        angle = 2 * math.pi * f * i / d
        columns += [math.sqrt(2 / d) * torch.cos(angle), math.sqrt(2 / d) * torch.sin(angle)]
    return torch.stack(columns, dim=1)


def balanced_orthonormal(
    d: int, r: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(d, r): orthonormal columns, every row of squared norm r / d, otherwise random: a
    :func:`harmonic_frame` on frequencies drawn at random, its rows permuted and their signs
    flipped at random, turned by a Haar-random r x r rotation (which changes neither the
    columns' orthonormality nor the rows' norms)."""
    n_pairs = (d - 1) // 2
    pairs = (r - 1) // 2 if r % 2 else (r // 2 if r // 2 <= n_pairs else (r - 2) // 2)
    drawn = torch.randperm(n_pairs, generator=generator)[:pairs] + 1
    frame = harmonic_frame(d, r, sorted(drawn.tolist()))
    rows = torch.randperm(d, generator=generator)
    signs = torch.randint(0, 2, (d, 1), generator=generator, dtype=torch.float64) * 2 - 1
    rotation = random_orthonormal(r, r, generator)
    return (signs * frame[rows] @ rotation).to(dtype)


def random_signs(d: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """(d, r) of entries +-1 / sqrt(d) at random: unit columns, every entry of the same size."""
    signs = torch.randint(0, 2, (d, r), generator=generator, dtype=torch.float64) * 2 - 1
    return signs / math.sqrt(d)


def unit_columns(d: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """(d, r) of Gaussian columns normalised to unit length (uniform on the sphere)."""
    gaussian = torch.randn(d, r, generator=generator, dtype=torch.float64)
    return gaussian / torch.linalg.norm(gaussian, dim=0, keepdim=True)


def random_cores(
    shape: Sequence[int],
    bonds: Sequence[int],
    *,
    std: float,
    n_grid: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Cores G_k (R_{k-1}, D_k, R_k) of a train (``bonds`` = (1, R_1, ..., R_{N-1}, 1)) or a
    ring (R_0 = R_N, the ring bond) whose every block kernel has squared norm about
    ``kernel_norm ** 2`` = ``std ** 2`` times its entries (D_{g+1} ... D_N), the norm of a
    kernel whose entries have standard deviation ``std``.

    A block kernel is the contraction L_l K, with L_l = G_1[:, i_1, :] ... G_g[:, i_g, :] (R_0 x
    R_g, the grid cores at the layer's index) and K = G_{g+1} ... G_N (R_g x kernel entries x
    R_N), traced over the ring bond.

    - Kernel cores (k > g), reshaped to R_{k-1} x (D_k R_k), have orthonormal rows (possible
      whenever R_{k-1} <= D_k R_k, which the TT-SVD caps ensure), so K has orthonormal rows:
      for a train ``||L_l K|| = ||L_l||`` exactly; around a ring each of the R_N values of the
      ring bond keeps 1 / R_N of it, which the trace over R_0 = R_N rows of L_l makes up.
    - Every slice G_k[:, i, :] of a grid core is ``s`` times a :func:`norm_preserving` matrix,
      so that ``||L_l||^2 = R_0 s^(2g)`` for every layer when the grid bonds do not shrink from
      left to right (R_{k-1} <= R_k), and about that otherwise.

    ``s = kernel_norm ** (1 / g)`` spreads the scale evenly over the grid cores (with no grid
    mode, the first core carries it). The last core's slices G_N[:, :, a], one per value of the
    ring bond, are each 1 / sqrt(R_N) times a matrix with orthonormal rows (mutually orthogonal
    where R_{N-1} R_N <= D_N), so that every value keeps exactly 1 / R_N of the norm whatever
    the rows of L_l weigh (where R_{N-1} <= D_N); for a train (R_N = 1) this is the
    right-orthogonal core again."""
    n = len(shape)
    if len(bonds) != n + 1 or bonds[0] != bonds[-1]:
        raise ValueError(f"bonds {tuple(bonds)} for {n} modes; expected {n + 1}, first = last")
    kernel_norm = std * math.sqrt(math.prod(shape[n_grid:]))
    scale = kernel_norm ** (1 / n_grid) if n_grid else 1.0
    cores = []
    for k, d in enumerate(shape):
        left, right = bonds[k], bonds[k + 1]
        if k < n_grid:
            slices = [norm_preserving(left, right, generator) for _ in range(d)]
            core = scale * torch.stack(slices, dim=1)
        elif k < n - 1:
            core = norm_preserving(left, d * right, generator).reshape(left, d, right)
        else:
            core = _closing_core(left, d, right, generator)
        cores.append(core)
    if not n_grid:
        cores[0] = cores[0] * kernel_norm
    return [c.to(dtype) for c in cores]


def _closing_core(left: int, d: int, ring: int, generator: torch.Generator) -> torch.Tensor:
    """The last core (left, d, ring) of :func:`random_cores`: slice ``a`` is Q_a / sqrt(ring),
    Q_a with orthonormal rows (the rows of one orthonormal (ring left) x d matrix when it fits,
    so that the slices are orthogonal to each other). Where ``left > d`` no slice can have
    orthonormal rows: the core reshaped to left x (d ring) has them instead, and each value of
    the ring bond keeps 1 / ring of a row's norm on average only."""
    if ring * left <= d:
        rows = random_orthonormal(ring * left, d, generator).reshape(ring, left, d)
    elif left <= d:
        rows = torch.stack([random_orthonormal(left, d, generator) for _ in range(ring)])
    else:
        return norm_preserving(left, d * ring, generator).reshape(left, d, ring)
    return rows.permute(1, 2, 0) / math.sqrt(ring)
