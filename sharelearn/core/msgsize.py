"""Bound the memory a msgpack message decodes to, before decoding it.

msgpack's own limits are per container: 16 MiB of empty lists (one byte each) decodes to 16 M list
objects, about 1.1 GiB. `check_decoded_size` walks the message's structure without building it and
adds up what CPython would allocate for every object (each list, map entry, int, float, str/bytes
length, array payload, plus the reference that holds it), and stops with `DecodedSizeExceeded` as
soon as the sum passes the budget.

The walk costs time per object, not per byte: str, bin and ext bodies (numpy arrays, big
integers) are skipped in O(1). Runs of one-byte objects (small ints, nil, bools, empty lists), of
fixed-width scalars (floats, ints), of ascii strings of one length (ids) and of equal-size ext8
values (big integers) inside an array are measured with C-level byte operations (`bytes.translate`
/ `find` / `count`) rather than one Python step per element.
"""

from __future__ import annotations

__all__ = ["MAX_COST_PER_BYTE", "DecodedSizeExceeded", "check_decoded_size"]

# What CPython 3.11+ allocates per decoded object, rounded up, plus 8 for the reference to it
# (a list's slots are the references its elements carry).
_REF = 8
_INT = 40  # int outside the small-int cache (-5..256)
_FLOAT = 32
_STR = 80  # str header (49 ascii .. 76 UCS-4) + the reference; plus its length (4x if not ascii)
_BYTES = 48
_LIST = 64
_DICT = 168  # an empty dict is 64, the first entry makes it 184, each later one ~40
_DICT_ENTRY = 48
_EXT = 160  # numpy array object (112) / big int, plus the reference; plus the payload

# No byte of a message costs more than an empty map: a message of n bytes decodes to at most
# n * MAX_COST_PER_BYTE, so one that small needs no walk.
MAX_COST_PER_BYTE = _DICT + _DICT_ENTRY
_MAX_DEPTH = 1024  # msgpack's own unpacker stack is no deeper
_WINDOW_MIN, _WINDOW_MAX = 64, 1 << 20


class DecodedSizeExceeded(ValueError):
    """The message would decode to more memory than its budget."""


def _table(pairs: dict[int, int]) -> bytes:
    return bytes(pairs.get(b, 0) for b in range(256))


def _one_byte_costs() -> dict[int, int]:
    costs = {b: _REF for b in range(0x80)}  # positive fixint: cached small ints
    costs.update({b: _REF + (_INT if b < 0xFB else 0) for b in range(0xE0, 0x100)})  # -32..-1
    costs.update({0xC0: _REF, 0xC2: _REF, 0xC3: _REF, 0xA0: _REF, 0x90: _LIST, 0x80: _DICT})
    return costs


_ONE_BYTE = _one_byte_costs()
# translate() maps a header byte to 1 if it is a whole one-byte object, else 0.
_IS_ONE_BYTE = _table(dict.fromkeys(_ONE_BYTE, 1))
# ... and to a class whose count() prices a run: 1 = empty list, 2 = empty map, 3 = uncached int.
_ONE_BYTE_CLASS = _table({0x90: 1, 0x80: 2, **{b: 3 for b in range(0xE0, 0xFB)}})

# Fixed-width scalars: header -> (total width in bytes, cost).
_FIXED: dict[int, tuple[int, int]] = {
    0xCA: (5, _FLOAT),
    0xCB: (9, _FLOAT),
    0xCC: (2, _REF),  # uint8: always a cached small int
    0xCD: (3, _INT),
    0xCE: (5, _INT),
    0xCF: (9, _INT),
    0xD0: (2, _INT),
    0xD1: (3, _INT),
    0xD2: (5, _INT),
    0xD3: (9, _INT),
}
_EQUALS = [_table({b: 1}) for b in range(256)]  # translate() to 1 where a byte equals b
_IS_HIGH = _table(dict.fromkeys(range(0x80, 0x100), 1))
# Variable-length bodies: header -> (bytes of the length field, base cost, extra type byte).
_SIZED: dict[int, tuple[int, int, int]] = {
    0xC4: (1, _BYTES, 0),
    0xC5: (2, _BYTES, 0),
    0xC6: (4, _BYTES, 0),
    0xC7: (1, _EXT, 1),
    0xC8: (2, _EXT, 1),
    0xC9: (4, _EXT, 1),
    0xD9: (1, _STR, 0),
    0xDA: (2, _STR, 0),
    0xDB: (4, _STR, 0),
}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
_CONTAINER = {0xDC: (2, False), 0xDD: (4, False), 0xDE: (2, True), 0xDF: (4, True)}


def _simple() -> tuple[list[int], list[int]]:
    """Width and cost of every header that is a whole object of fixed size (0: it is not)."""
    width, cost = [0] * 256, [0] * 256
    for h, c in _ONE_BYTE.items():
        width[h], cost[h] = 1, c
    for h, (w, c) in _FIXED.items():
        width[h], cost[h] = w, c
    for h in range(0xA1, 0xC0):
        width[h], cost[h] = 1 + (h & 0x1F), _STR + (h & 0x1F)
    for h, n in _FIXEXT.items():
        width[h], cost[h] = 2 + n, _EXT + n
    return width, cost


_WIDTH, _COST = _simple()
# Headers whose runs in an array are measured in bulk.
_RUNS = frozenset([*_ONE_BYTE, *_FIXED, *range(0xA1, 0xC0), 0xC7])


def _run_one_byte(data: bytes, pos: int, count: int) -> tuple[int, int]:
    """Length and cost of the leading run of one-byte objects in the next `count` elements."""
    total_len = total_cost = 0
    window = _WINDOW_MIN
    while count:
        chunk = data[pos : pos + min(count, window)]
        run = chunk.translate(_IS_ONE_BYTE).find(0)
        run = len(chunk) if run < 0 else run
        if run:
            classes = chunk[:run].translate(_ONE_BYTE_CLASS)
            total_cost += run * _REF + classes.count(1) * (_LIST - _REF)
            total_cost += classes.count(2) * (_DICT - _REF) + classes.count(3) * _INT
        total_len, pos, count = total_len + run, pos + run, count - run
        if run < len(chunk) or run == 0:
            break
        window = min(window * 2, _WINDOW_MAX)
    return total_len, total_cost


def _run_fixed(data: bytes, pos: int, count: int, width: int, prefix: bytes) -> int:
    """How many of the next `count` elements are `width` bytes long and start with `prefix`."""
    total = 0
    window = _WINDOW_MIN
    while count:
        n = min(count, window, (len(data) - pos) // width)
        run = n
        for j, byte in enumerate(prefix):  # the first element whose j-th byte differs ends the run
            heads = data[pos + j : pos + j + run * width : width].translate(_EQUALS[byte])
            first = heads.find(0)
            run = run if first < 0 else first
        total, pos, count = total + run, pos + run * width, count - run
        if run < n or n <= 0:
            break
        window = min(window * 2, _WINDOW_MAX)
    return total


def _length(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise ValueError("message is truncated")
    return int.from_bytes(data[pos : pos + size], "big")


def _one(data: bytes, pos: int) -> tuple[int, int, int, bool]:
    """Parse the object header at `pos`: (next position, cost, children, is_map)."""
    h = data[pos]
    if h in _ONE_BYTE:
        return pos + 1, _ONE_BYTE[h], 0, False
    if 0x81 <= h <= 0x8F:
        return pos + 1, _DICT + (h & 0x0F) * _DICT_ENTRY, 2 * (h & 0x0F), True
    if 0x91 <= h <= 0x9F:
        return pos + 1, _LIST, h & 0x0F, False
    if 0xA1 <= h <= 0xBF:
        return pos + 1 + (h & 0x1F), _STR + (h & 0x1F), 0, False
    if h in _FIXED:
        width, cost = _FIXED[h]
        return pos + width, cost, 0, False
    if h in _SIZED:
        size, base, extra = _SIZED[h]
        n = _length(data, pos + 1, size)
        start = pos + 1 + size + extra
        if base == _STR and not data[start : start + n].isascii():
            base += 3 * n  # decoded as UCS-2 / UCS-4: up to 4 bytes per UTF-8 byte
        return start + n, base + n, 0, False
    if h in _FIXEXT:
        return pos + 2 + _FIXEXT[h], _EXT + _FIXEXT[h], 0, False
    if h in _CONTAINER:
        size, is_map = _CONTAINER[h]
        n = _length(data, pos + 1, size)
        cost = _DICT + n * _DICT_ENTRY if is_map else _LIST
        return pos + 1 + size, cost, 2 * n if is_map else n, is_map
    raise ValueError(f"byte 0x{h:02x} at offset {pos} starts no msgpack object")


def _run(data: bytes, pos: int, left: int, h: int) -> tuple[int, int, int]:
    """Measure a run of like objects at `pos`: (elements, next position, cost); (0, pos, 0) if none."""
    if h in _ONE_BYTE:
        run, cost = _run_one_byte(data, pos, left)
        return run, pos + run, cost
    if h in _FIXED:
        width, each = _FIXED[h]
        run = _run_fixed(data, pos, left, width, data[pos : pos + 1])
        return run, pos + run * width, run * each
    if 0xA1 <= h <= 0xBF:  # strings of one length (ids): cheap only if every body is ascii
        width = 1 + (h & 0x1F)
        run = _run_fixed(data, pos, left, width, data[pos : pos + 1])
        span = data[pos : pos + run * width]
        if run and span.translate(_IS_HIGH).count(1) == run:  # the headers are the only high bytes
            return run, pos + run * width, run * _COST[h]
        return 0, pos, 0
    if h == 0xC7 and pos + 1 < len(data):  # ext8 of one length: ciphertexts, masked integers
        width = 3 + data[pos + 1]
        run = _run_fixed(data, pos, left, width, data[pos : pos + 2])
        return run, pos + run * width, run * (_EXT + width - 3)
    return 0, pos, 0


def check_decoded_size(data: bytes, budget: int) -> int:
    """Return the estimated decoded size of the msgpack object at the start of `data`.

    Raises:
        DecodedSizeExceeded: as soon as the estimate passes `budget` (nothing is allocated).
        ValueError: the structure is truncated or holds a byte that starts no object.
    """
    pos = used = cooldown = 0
    end = len(data)
    pending = [1]  # elements still to read in each open container, innermost last
    lists = [True]  # whether that container is an array (runs are only measured in arrays)
    while pending:
        left = pending[-1]
        if not left:
            pending.pop()
            lists.pop()
            continue
        if pos >= end:
            raise ValueError("message is truncated")
        h = data[pos]
        if cooldown:
            cooldown -= 1
        elif left >= 8 and lists[-1] and h in _RUNS:
            run, pos, cost = _run(data, pos, left, h)
            pending[-1] = left - run
            used += cost
            if used > budget:
                raise DecodedSizeExceeded(f"decodes to more than {budget:,} bytes")
            cooldown = 0 if run >= 8 else 32  # a mixed array: stop trying runs for a while
            continue
        width = _WIDTH[h]
        if width:  # a whole object of known size: scalars, short strings, empty containers
            if 0xA1 <= h <= 0xBF and not data[pos + 1 : pos + width].isascii():
                used += 3 * width  # one wide character makes every character 2 or 4 bytes
            pos, used = pos + width, used + _COST[h]
        else:
            pos, cost, children, is_map = _one(data, pos)
            used += cost
            if children:
                if len(pending) > _MAX_DEPTH:
                    raise ValueError(f"containers are nested deeper than {_MAX_DEPTH}")
                pending[-1] = left - 1
                pending.append(children)
                lists.append(not is_map)
                if used > budget:
                    raise DecodedSizeExceeded(f"decodes to more than {budget:,} bytes")
                continue
        pending[-1] = left - 1
        if used > budget:
            raise DecodedSizeExceeded(f"decodes to more than {budget:,} bytes")
    if pos > end:
        raise ValueError("message is truncated")
    return used
