"""Native crypto kernels, and the one switch between them and their portable fallback.

Modules, each a thin typed wrapper over native code and nothing else:

* `mbx`: finds and loads ipp-crypto's `libcrypto_mb` and `libippcp` (and the Intel runtime);
* `mbexp`: multi-buffer modular exponentiation (`modexp.powmod`);
* `mbx25519`: multi-buffer X25519 (`x25519.scalarmult`);
* `mbxmont`: multi-buffer Montgomery products for fixed-base tables (`fixedbase`);
* `maskadd_jit`: the numba kernel fusing AES-CTR keystreams into a vector (`maskadd`).

The interface the maths modules use is one rule: every kernel is reached through a loader
(`load()`, `load_ippcp()`, `mbxmont.kernel()`, maskadd's fused check) that returns None when the
native code cannot run here (library absent, CPU without AVX512-IFMA/VAES, a failed known-answer
test) or when `force_portable(True)` is set. On None the maths module takes its portable path
(gmpy2, OpenSSL, numpy); both paths compute the same function bit for bit, which
`tests/crypto/test_kernels.py` checks by running each on one machine.
"""

from __future__ import annotations

from sharelearn.crypto.kernels.mbx import force_portable, is_available, is_portable, load, load_ippcp

__all__ = ["force_portable", "is_available", "is_portable", "load", "load_ippcp"]
