"""Bulk keystreams and the fixed-key AES permutation.

* `expand` / `expand_array` / `expand_u64`: AES-CTR keystream of a 16-byte (AES-128) or 32-byte
  (AES-256) seed. One OpenSSL call produces the whole stream, so millions of bytes cost
  milliseconds. `stream` picks an independent sub-stream: it is the high 64 bits of the initial
  counter block, so streams of one seed never overlap unless one is longer than 2^64 blocks.
* `KeystreamWriter`: the keystreams of many keys, one after another, into one reusable buffer
  (secure aggregation expands one mask per neighbour per round). It runs on ipp-crypto's
  `ippsAESEncryptCTR` (VAES where the CPU has it: ~16 GB/s and a 1.3 us key setup, against ~11
  GB/s and 4-10 us for OpenSSL through `cryptography`) after a known-answer check against OpenSSL,
  which it falls back to; both give the same bytes.
* `chacha20_expand`: the same with ChaCha20 (RFC 8439 block function, 32-byte seed).
* `fixed_key_aes`: AES-128 under a public key as a random permutation pi on 128-bit blocks
  (Bellare, Hoang, Keelveedhi, Rogaway 2013), one ECB call on a whole buffer.
* `tccr`: the tweakable circular correlation-robust hash of Guo, Katz, Wang, Yu 2020 (§7.3),
  H(x, i) = pi(pi(x) xor i) xor pi(x), used by half-gates garbling and by IKNP.

Leaks: a keystream is pseudorandom to anyone without the seed (AES/ChaCha20 as PRFs); the fixed
AES key is public by design, its security rests on modelling AES as an ideal permutation.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sharelearn.core.errors import CryptoError
from sharelearn.core.types import U8Array, U64Array
from sharelearn.crypto.kernels import mbx

__all__ = [
    "BLOCK_BYTES",
    "FIXED_KEY",
    "KeystreamWriter",
    "aes_ecb",
    "chacha20_expand",
    "expand",
    "expand_array",
    "expand_u64",
    "fixed_key_aes",
    "fixed_key_aes_u64",
    "keystream_backend",
    "tccr",
    "tccr_into",
]

BLOCK_BYTES = 16
# Public "nothing up my sleeve" key: the permutation pi must be fixed and known to every party.
FIXED_KEY = hashlib.sha256(b"sharelearn/fixed-key-aes/v1").digest()[:16]
# OpenSSL's EVP update takes an int length; stay well below 2^31 per call.
_MAX_CALL_BYTES = 1 << 30


def _check_seed(seed: bytes, sizes: tuple[int, ...]) -> None:
    if not isinstance(seed, bytes | bytearray | memoryview) or len(seed) not in sizes:
        got = len(seed) if isinstance(seed, bytes | bytearray | memoryview) else type(seed).__name__
        raise CryptoError(f"PRG seed must be {' or '.join(map(str, sizes))} bytes, got {got}")


def _check_count(n_bytes: int) -> None:
    if not isinstance(n_bytes, int) or n_bytes < 0:
        raise CryptoError(f"PRG output length must be a non-negative int, got {n_bytes!r}")


def _check_stream(stream: int) -> None:
    if not 0 <= stream < 1 << 64:
        raise CryptoError(f"PRG stream must be in 0..2^64-1, got {stream}")


def _keystream(cipher: Cipher[modes.CTR] | Cipher[None], n_bytes: int) -> U8Array:
    """Return `n_bytes` of the keystream of `cipher` (the encryption of zeros), chunk by chunk."""
    enc = cipher.encryptor()
    # update_into needs 15 spare bytes after the output; keep them and return a view without them.
    out = np.empty(n_bytes + BLOCK_BYTES, dtype=np.uint8)
    zeros = np.zeros(min(n_bytes, _MAX_CALL_BYTES), dtype=np.uint8)
    for start in range(0, n_bytes, _MAX_CALL_BYTES):
        size = min(_MAX_CALL_BYTES, n_bytes - start)
        enc.update_into(zeros[:size].data, out[start:].data)
    return out[:n_bytes]


def expand_array(seed: bytes, n_bytes: int, *, stream: int = 0) -> U8Array:
    """Expand a 16- or 32-byte seed into `n_bytes` of AES-CTR keystream as a writable uint8 array.

    Args:
        seed: 16 bytes (AES-128) or 32 bytes (AES-256); must be secret and uniformly random.
        n_bytes: output length.
        stream: independent sub-stream index in 0..2^64-1 (never reuse (seed, stream) for two
            different purposes).

    Raises:
        CryptoError: on a bad seed length, negative length or out-of-range stream.
    """
    _check_seed(seed, (16, 32))
    _check_count(n_bytes)
    _check_stream(stream)
    iv = stream.to_bytes(8, "big") + bytes(8)
    return _keystream(Cipher(algorithms.AES(bytes(seed)), modes.CTR(iv)), n_bytes)


def expand(seed: bytes, n_bytes: int, *, stream: int = 0) -> bytes:
    """Expand a seed into `n_bytes` of AES-CTR keystream (see `expand_array`)."""
    return expand_array(seed, n_bytes, stream=stream).tobytes()


def expand_u64(seed: bytes, shape: int | tuple[int, ...], *, stream: int = 0) -> U64Array:
    """Expand a seed into a uniformly random uint64 array of `shape` (little-endian words)."""
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = int(np.prod(dims, dtype=np.int64))
    if count < 0 or any(d < 0 for d in dims):
        raise CryptoError(f"expand_u64 shape must be non-negative, got {shape}")
    raw = expand_array(seed, 8 * count, stream=stream)
    return raw.view("<u8").astype(np.uint64, copy=False).reshape(dims)


_GCM_FIRST = b"\x00\x00\x00\x02"  # GCM's first keystream counter block: nonce || 2
_GCM_MAX_BYTES = ((1 << 32) - 3) * BLOCK_BYTES  # GCM increments only the low 32 bits
_IPP_LOCK = threading.Lock()
_IPP_CHECKED: dict[int, bool] = {}  # id(libippcp) -> passed the known-answer check


def _ipp_aes() -> ctypes.CDLL | None:
    """libippcp with its AES-CTR entry points typed, when it agrees with OpenSSL, else None."""
    lib = mbx.load_ippcp()
    if lib is None:
        return None
    with _IPP_LOCK:
        ok = _IPP_CHECKED.get(id(lib))
        if ok is None:
            lib.ippsAESGetSize.argtypes = [ctypes.POINTER(ctypes.c_int)]
            lib.ippsAESInit.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
            lib.ippsAESEncryptCTR.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] + [ctypes.c_void_p] * 2
            lib.ippsAESEncryptCTR.argtypes += [ctypes.c_int]
            for fn in (lib.ippsAESGetSize, lib.ippsAESInit, lib.ippsAESEncryptCTR):
                fn.restype = ctypes.c_int
            ok = _IPP_CHECKED[id(lib)] = _ipp_known_answer(lib)
    return lib if ok else None


def _ipp_known_answer(lib: ctypes.CDLL) -> bool:
    """Both key sizes, an odd length and a counter that carries out of its low byte."""
    for key in (bytes(range(16)), bytes(range(32))):
        counter = bytes(15) + b"\xfe"
        want = _keystream(Cipher(algorithms.AES(key), modes.CTR(counter)), 1000)
        try:
            got = KeystreamWriter(1000, _lib=lib).write(key, counter)
        except CryptoError:
            return False
        if not np.array_equal(got, want):
            return False
    return True


def keystream_backend() -> str:
    """The backend a `KeystreamWriter` made now would use: "ipp" or "openssl"."""
    return "ipp" if _ipp_aes() is not None else "openssl"


class KeystreamWriter:
    """AES-CTR keystreams of `n_bytes` for key after key, into one buffer that is reused.

    `write(key, counter)` returns a view of the keystream of `key` (AES-128 or AES-256 by its
    length) from the 16-byte initial counter block `counter`, incremented as a 128-bit big-endian
    number (as OpenSSL's CTR mode and NIST SP 800-38A), valid until the next call. Not thread-safe:
    one writer per thread. See the module docstring for the two backends.
    """

    def __init__(self, n_bytes: int, *, _lib: ctypes.CDLL | None = None) -> None:
        _check_count(n_bytes)
        self.n_bytes = n_bytes
        self._zeros = np.zeros(n_bytes + BLOCK_BYTES, dtype=np.uint8)
        self._out = np.empty(n_bytes + BLOCK_BYTES, dtype=np.uint8)
        self._lib = _lib if _lib is not None else _ipp_aes()
        if self._lib is not None:
            size = ctypes.c_int()
            if self._lib.ippsAESGetSize(ctypes.byref(size)) != 0:
                raise CryptoError("ippsAESGetSize failed")
            self._ctx = ctypes.create_string_buffer(size.value)
            self._ctr = ctypes.create_string_buffer(BLOCK_BYTES)

    @property
    def backend(self) -> str:
        """ "ipp" or "openssl"."""
        return "ipp" if self._lib is not None else "openssl"

    def write(self, key: bytes, counter: bytes) -> U8Array:
        _check_seed(key, (16, 32))
        if len(counter) != BLOCK_BYTES:
            raise CryptoError(f"CTR counter block must be 16 bytes, got {len(counter)}")
        n = self.n_bytes
        if n == 0:  # ipp refuses empty input
            return self._out[:0]
        if self._lib is None or n > _MAX_CALL_BYTES:
            mode: modes.CTR | modes.GCM = modes.CTR(bytes(counter))
            if counter[12:] == _GCM_FIRST and n < _GCM_MAX_BYTES:
                # The same bytes from GCM's GCTR (nonce || 2, 3, ...; its tag is never computed):
                # OpenSSL's fastest AES-CTR, ~1.5x its CTR mode here.
                mode = modes.GCM(bytes(counter[:12]))
            enc = Cipher(algorithms.AES(bytes(key)), mode).encryptor()
            for start in range(0, n, _MAX_CALL_BYTES):
                size = min(_MAX_CALL_BYTES, n - start)
                enc.update_into(self._zeros[:size].data, self._out[start:].data)
            return self._out[:n]
        lib, ctx = self._lib, self._ctx
        if lib.ippsAESInit(bytes(key), len(key), ctx, len(ctx)) != 0:
            raise CryptoError("ippsAESInit failed")
        ctypes.memmove(self._ctr, bytes(counter), BLOCK_BYTES)  # ipp advances it in place
        status = lib.ippsAESEncryptCTR(self._zeros.ctypes.data, self._out.ctypes.data, n, ctx, self._ctr, 128)
        if status != 0:
            raise CryptoError(f"ippsAESEncryptCTR failed with status {status}")
        return self._out[:n]


def chacha20_expand(seed: bytes, n_bytes: int, *, stream: int = 0) -> bytes:
    """Expand a 32-byte seed into `n_bytes` of ChaCha20 keystream (RFC 8439).

    The 16-byte nonce block is a zero 32-bit block counter followed by `stream` as the 96-bit nonce
    (its high 32 bits zero), so distinct streams never overlap below 2^38 bytes each.
    """
    _check_seed(seed, (32,))
    _check_count(n_bytes)
    _check_stream(stream)
    nonce = bytes(4) + stream.to_bytes(12, "little")
    return _keystream(Cipher(algorithms.ChaCha20(bytes(seed), nonce), mode=None), n_bytes).tobytes()


def _ecb_into(key: bytes, src: U8Array, out: U8Array) -> None:
    """AES-ECB of the flat contiguous bytes `src` into `out`, which has >= 16 spare bytes at the end."""
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    for start in range(0, src.size, _MAX_CALL_BYTES):
        stop = min(src.size, start + _MAX_CALL_BYTES)
        enc.update_into(src[start:stop].data, out[start:].data)


def aes_ecb(key: bytes, blocks: U8Array) -> U8Array:
    """Encrypt each 16-byte row of `blocks` (N, 16) with AES under `key`, in one ECB call."""
    _check_seed(key, (16, 32))
    if blocks.dtype != np.uint8 or blocks.ndim != 2 or blocks.shape[1] != BLOCK_BYTES:
        raise CryptoError(f"AES blocks must be a uint8 (N, 16) array, got {blocks.dtype} {blocks.shape}")
    src = np.ascontiguousarray(blocks).reshape(-1)
    # update_into wants 15 spare bytes after the output; return a view without them.
    out = np.empty(src.size + BLOCK_BYTES, dtype=np.uint8)
    _ecb_into(bytes(key), src, out)
    return out[: src.size].reshape(-1, BLOCK_BYTES)


def fixed_key_aes(blocks: U8Array) -> U8Array:
    """Apply the public random permutation pi = AES-128(FIXED_KEY, .) to each row of (N, 16) blocks."""
    return aes_ecb(FIXED_KEY, blocks)


def fixed_key_aes_u64(blocks: U64Array) -> U64Array:
    """`fixed_key_aes` on blocks held as (..., 2) uint64 (little-endian halves); same shape out."""
    if blocks.dtype != np.uint64 or blocks.ndim < 1 or blocks.shape[-1] != 2:
        raise CryptoError(f"u64 blocks must be a uint64 (..., 2) array, got {blocks.dtype} {blocks.shape}")
    flat = np.ascontiguousarray(blocks).reshape(-1, 2)
    out = fixed_key_aes(flat.view(np.uint8).reshape(-1, BLOCK_BYTES))
    return out.view(np.uint64).reshape(blocks.shape)


def tccr(x: U64Array, tweak_lo: U64Array, tweak_hi: int = 0) -> U64Array:
    """Hash 128-bit blocks with the tweakable CCR hash of Guo et al. 2020 (§7.3).

    H(x, i) = pi(pi(x) xor i) xor pi(x) with i = tweak_hi * 2^64 + tweak_lo. Two bulk AES calls for
    the whole batch. (The older pi(2x xor i) xor 2x xor i of ZRE15's implementation needs one call,
    but Guo et al. showed that its security argument does not cover the tweak correlations that
    half-gates uses; we follow their fix.)

    Args:
        x: (..., 2) uint64 blocks.
        tweak_lo: uint64 tweaks broadcastable to x.shape[:-1]; each (x, tweak) pair must use a tweak
            unique under the secret correlation (per gate / per OT index).
        tweak_hi: a public value put in the high 64 bits of every tweak (e.g. a batch id).

    Returns:
        (..., 2) uint64 hashes.
    """
    px = fixed_key_aes_u64(x)
    k = px.copy()
    k[..., 0] ^= np.broadcast_to(tweak_lo, x.shape[:-1]).astype(np.uint64, copy=False)
    if tweak_hi:
        k[..., 1] ^= np.uint64(tweak_hi)
    out = fixed_key_aes_u64(k)
    out ^= px
    return out


def tccr_into(x: U64Array, tweak_lo: U64Array, scratch: U64Array, *, tweak_hi: int = 0) -> None:
    """`tccr` in place: overwrite the contiguous (..., 2) uint64 blocks `x` with H(x, tweak).

    `scratch` is a flat uint64 buffer of at least 2 * x.size + 4 words (two AES outputs and their
    spare bytes). Garbling calls this once per layer with preallocated buffers, so the hot loop
    allocates nothing.
    """
    n = x.size
    if x.dtype != np.uint64 or x.shape[-1:] != (2,) or not x.flags.c_contiguous:
        raise CryptoError("tccr_into needs contiguous uint64 (..., 2) blocks")
    if scratch.dtype != np.uint64 or scratch.ndim != 1 or scratch.size < 2 * n + 4:
        raise CryptoError(f"tccr_into scratch must be flat uint64 of >= {2 * n + 4} words")
    px_buf, out_buf = scratch[: n + 2], scratch[n + 2 : 2 * n + 4]
    _ecb_into(FIXED_KEY, x.reshape(-1).view(np.uint8), px_buf.view(np.uint8))
    px = px_buf[:n].reshape(x.shape)
    np.bitwise_xor(px[..., 0], tweak_lo, out=x[..., 0])
    if tweak_hi:
        np.bitwise_xor(px[..., 1], np.uint64(tweak_hi), out=x[..., 1])
    else:
        np.copyto(x[..., 1], px[..., 1])
    _ecb_into(FIXED_KEY, x.reshape(-1).view(np.uint8), out_buf.view(np.uint8))
    np.bitwise_xor(out_buf[:n].reshape(x.shape), px, out=x)
