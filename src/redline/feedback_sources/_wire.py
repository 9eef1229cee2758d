"""Values as data between the test harness and the candidate's process (both sandboxed).

Standard library only: the sandbox runs this file's source, prepended to the harness
(``_pytests_child.py``) and to the candidate's server (``_pytests_server.py``).

A value crosses the pipe as JSON: ``None``, ``bool``, ``int``, ``float`` and ``str``
of exactly those types as themselves; ``list``, ``tuple``, ``set``, ``frozenset``,
``dict``, ``bytes``, ``complex`` and large ``int`` as tagged objects; anything else —
a subclass of a plain type included, so an ``int`` whose ``__eq__`` always answers True
is not an ``int`` here — as a *reference*: the id of the object, kept on the side that
owns it, and its ``repr``. The side that decodes a reference gets an object that never
equals anything but itself; the harness can still call it, read its attributes or
iterate it, each a request answered with more data. So every comparison a test makes
runs in the harness, on values the harness built from data.
"""

import json

PLAIN = (type(None), bool, int, float, str)
MAX_ITEMS = 1_000_000
MAX_LINE = 64 << 20


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed message."""


def encode(value, ref, budget=None, depth=0):
    """`value` as JSON-able data; `ref(obj)` -> id registers what is not plain data."""
    budget = budget if budget is not None else [MAX_ITEMS]
    budget[0] -= 1
    kind = type(value)
    if kind in PLAIN:
        if kind is int and value.bit_length() > 60:
            return {"t": "int", "v": hex(value)}
        return value
    if budget[0] < 0 or depth > 60:
        return _reference(value, ref)
    if kind in (list, tuple, set, frozenset):
        return {"t": kind.__name__,
                "v": [encode(x, ref, budget, depth + 1) for x in value]}
    if kind is dict:
        return {"t": "dict", "v": [[encode(k, ref, budget, depth + 1),
                                    encode(v, ref, budget, depth + 1)]
                                   for k, v in value.items()]}
    if kind is bytes:
        return {"t": "bytes", "v": value.hex()}
    if kind is complex:
        return {"t": "complex", "v": [value.real, value.imag]}
    return _reference(value, ref)


def _reference(value, ref):
    try:
        text = repr(value)
    except BaseException:  # the object's own __repr__ failed
        text = f"<{type(value).__name__} object>"
    if type(text) is not str:
        text = f"<{type(value).__name__} object>"
    return {"t": "ref", "id": ref(value), "repr": text[:2000],
            "type": type(value).__name__}


def decode(data, ref):
    """Data made by `encode` as a value; `ref(id, repr, type)` builds a reference.

    Raises:
        ProtocolError: `data` is not what `encode` makes.
    """
    kind = type(data)
    if kind in PLAIN:
        return data
    if kind is not dict or type(data.get("t")) is not str:
        raise ProtocolError(f"not a value: {str(data)[:100]}")
    tag, v = data["t"], data.get("v")
    try:
        if tag in ("list", "tuple", "set", "frozenset"):
            if type(v) is not list:
                raise ProtocolError("a sequence without items")
            items = [decode(x, ref) for x in v]
            return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
        if tag == "dict":
            return {decode(k, ref): decode(x, ref) for k, x in v}
        if tag == "bytes":
            return bytes.fromhex(v)
        if tag == "complex":
            return complex(float(v[0]), float(v[1]))
        if tag == "int":
            return int(v, 16)
        if tag == "ref" and type(data.get("id")) is int:
            return ref(data["id"], str(data.get("repr", "")), str(data.get("type", "")))
    except ProtocolError:
        raise
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise ProtocolError(f"malformed {tag}: {exc}") from None
    raise ProtocolError(f"unknown tag {tag!r}")


def send(fd, message):
    """Write one message (a JSON line) to `fd`."""
    import os

    data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


class Reader:
    """Reads JSON-line messages from a pipe, keeping a partial line across interrupts."""

    def __init__(self, fd):
        self.fd = fd
        self.buffer = b""

    def read(self):
        """The next message; None at the end of the pipe.

        Raises:
            ProtocolError: a line that is not a JSON object, or one too long.
        """
        import os

        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ProtocolError("a message longer than the limit")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise ProtocolError(f"not JSON: {line[:100]!r}") from None
        if type(message) is not dict:
            raise ProtocolError(f"not a message: {line[:100]!r}")
        return message
