"""The order JAX's TPU interpret mode visits a grid in, computed in numpy.

Interpret mode (`InterpretParams(random_seed=...)`) visits each `parallel`
grid dimension in the order of a jax.random.permutation keyed by the seed.
Asking jax.random for it compiles several small XLA programs (seeding,
splitting, threefry bits, sorting): about 0.7 s on the first call of a
kernel, most of a cold start. This module computes the same permutations
bit for bit with numpy, from the algorithm as it stands at the pinned JAX
(0.10.2):

- the key of seed s is the pair of uint32 words (hi, lo) of s as a 64-bit
  integer; without x64, the seed is first wrapped to int32 and hi is 0.
- the key is split once per parallel dimension, in grid order: the first
  half of the split carries on, the second is that dimension's key.
- a permutation of n is arange(n) stably sorted by fresh 32-bit random
  words, once per round; a round's key is split off the same way. There are
  as many rounds as it takes for (2**32 - 1)**rounds to reach n**3.
- words and splits are threefry2x32 hashes of counters, laid out in one of
  two ways chosen by the `jax_threefry_partitionable` flag.

Where the configuration is one this module does not reproduce (another
default PRNG implementation such as rbg or a custom one, a
jax_random_seed_offset, a seed outside int64, a dimension of 2**31 or
more), it calls JAX's own function instead, compiling as before, so the
order is never a different one.

What this module knows: JAX's PRNG algorithm for grid orders. What it must
not know: FFI attributes, lowering (bridge.py).
"""

from __future__ import annotations

import numpy as np
from jax._src import config as jax_config

_WORD = 2**32
_KEY_PARITY = np.uint32(0x1BD11BDA)  # threefry's third key word constant
# Threefry2x32's rotation distances: 5 groups of 4 rounds alternate these.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(key, x0, x1):
  """Threefry-2x32 (20 rounds) of the counter pairs (x0[i], x1[i]) under
  key (k0, k1): two uint32 arrays like x0."""
  ks = (np.uint32(key[0]), np.uint32(key[1]),
        np.uint32(key[0]) ^ np.uint32(key[1]) ^ _KEY_PARITY)
  with np.errstate(over="ignore"):
    a = x0.astype(np.uint32) + ks[0]
    b = x1.astype(np.uint32) + ks[1]
    for group in range(5):
      for r in _ROTATIONS[group % 2]:
        a += b
        b = (b << np.uint32(r)) | (b >> np.uint32(32 - r))
        b ^= a
      a += ks[(group + 1) % 3]
      b += ks[(group + 2) % 3] + np.uint32(group + 1)
  return a, b


def _split(key, partitionable: bool):
  """jax.random.split(key) into two keys."""
  if partitionable:
    # Key i hashes the 64-bit counter i: (hi, lo) = (0, i).
    a, b = _threefry2x32(key, np.zeros(2, np.uint32),
                         np.arange(2, dtype=np.uint32))
    return (a[0], b[0]), (a[1], b[1])
  # The 4 words are the hash of counters 0..3 as pairs (0, 2), (1, 3), read
  # back as all first words, then all second words.
  a, b = _threefry2x32(key, np.array([0, 1], np.uint32),
                       np.array([2, 3], np.uint32))
  return (a[0], a[1]), (b[0], b[1])


def _random_words(key, n: int, partitionable: bool) -> np.ndarray:
  """jax.random.bits(key, (n,), uint32)."""
  if partitionable:
    # Word i: the xor of the hash of the 64-bit counter i (n < 2**32 here).
    a, b = _threefry2x32(key, np.zeros(n, np.uint32),
                         np.arange(n, dtype=np.uint32))
    return a ^ b
  # Counters 0..n-1 (and a 0 if n is odd) in two halves paired up; the
  # words are the hashes' first halves, then their second halves.
  half = (n + 1) // 2
  counters = np.zeros(2 * half, np.uint32)
  counters[:n] = np.arange(n, dtype=np.uint32)
  a, b = _threefry2x32(key, counters[:half], counters[half:])
  return np.concatenate([a, b])[:n]


def shuffle_rounds(n: int) -> int:
  """How many sorts jax.random.permutation makes for n elements: enough
  that n**3 <= (2**32 - 1)**rounds (JAX computes the same with float
  logarithms; n**3 is never within rounding of a power of 2**32 - 1)."""
  rounds = 0
  while (_WORD - 1)**rounds < n**3:
    rounds += 1
  return rounds


def permutation(key, n: int, partitionable: bool) -> np.ndarray:
  """jax.random.permutation(key, jnp.arange(n, dtype=jnp.int32))."""
  x = np.arange(n, dtype=np.int32)
  for _ in range(shuffle_rounds(n)):
    key, subkey = _split(key, partitionable)
    # Stable, as lax.sort_key_val is by default: equal words keep order.
    x = x[np.argsort(_random_words(subkey, n, partitionable), kind="stable")]
  return x


def seed_key(seed: int, x64: bool):
  """The threefry key of jax.random.key(seed), seed within int64."""
  if not x64:
    # The seed becomes an int32 (wrapping), whose high word is 0.
    return np.uint32(0), np.uint32(seed % _WORD)
  bits = seed % 2**64
  return np.uint32(bits >> 32), np.uint32(bits % _WORD)


def _reproducible(grid, parallel, seed: int) -> bool:
  return (jax_config.default_prng_impl.value == "threefry2x32"
          and not jax_config.random_seed_offset.value
          and -2**63 <= seed < 2**63
          and all(int(size) < 2**31
                  for size, p in zip(grid, parallel) if p))


def randomized_grid_coordinates(grid, mosaic_params, random_seed):
  """What interpret mode's `_get_randomized_grid_coordinates(grid,
  mosaic_params, random_seed)` returns, as numpy int32 arrays: per grid
  dimension, a permutation of range(size) if it is `parallel`, else an
  empty array. Raises ValueError as interpret mode does when the parallel
  dimensions are not a prefix of the grid; parallel sizes must be ints."""
  from jax._src.pallas.mosaic.interpret import interpret_pallas_call as ipc  # pylint: disable=g-import-not-at-top
  parallel = ipc._get_parallel_dim_semantics(mosaic_params, len(grid))  # pylint: disable=protected-access
  seed = int(random_seed or 0)
  if not _reproducible(grid, parallel, seed):
    # Not reproduced here: JAX's own function (compiles XLA programs).
    return tuple(np.asarray(c, np.int32) for c in
                 ipc._get_randomized_grid_coordinates(  # pylint: disable=protected-access
                     grid, mosaic_params, random_seed))
  partitionable = bool(jax_config.threefry_partitionable.value)
  key = seed_key(seed, bool(jax_config.enable_x64.value))
  coords = []
  for size, is_parallel in zip(grid, parallel):
    if is_parallel:
      key, subkey = _split(key, partitionable)
      coords.append(permutation(subkey, int(size), partitionable))
    else:
      coords.append(np.zeros(0, np.int32))
  return tuple(coords)
