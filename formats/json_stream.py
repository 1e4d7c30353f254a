"""Streams a large single-object JSON file (COCO-style) in bounded memory.

The top-level object is walked key by key. Small values (``categories``, ``info``) are decoded whole.
Large arrays (``images``, ``annotations``) are cut into windows of many elements: a cut is guessed at a
``}`` + ``,`` (or ``}`` + ``]`` for the end) and then *proved* by parsing the window: a prefix of an
array that parses as a sequence of complete elements ends at the array's top level, so a wrong guess
(a separator inside a string or a nested list) always fails to parse and is never accepted. Windows
parse with a fast columnar parser supplied by the caller; a window the fast parser refuses (NaN, wrong
types, pretty-printed JSON, odd separators) is re-read element by element with the standard library so
every record can be accepted or rejected on its own, with its index and byte offset.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

log = logging.getLogger("ovlabel.json")

_WS = b" \t\r\n"
_SEP_RE = re.compile(rb"\}[ \t\r\n]*,")
_END_RE = re.compile(rb"\}[ \t\r\n]*\]")
_END_TRIES = 4
_FIRST_KEY_RE = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"([^"\\]{0,64})"')
_DECODER = json.JSONDecoder()


class JSONStructureError(ValueError):
    """The file is not the JSON structure expected (malformed, truncated, wrong top-level types)."""


class FastParseError(ValueError):
    """The fast parser refused a window; the reader falls back to element-by-element decoding."""


@dataclass
class Window:
    """Elements of a big top-level array: either parsed fast (`table`) or decoded one by one (`objects`)."""

    key: str
    start_index: int  # index of the first element in the array
    byte_offset: int  # file offset of the first element
    table: Any = None  # whatever the fast parser returned
    objects: list | None = None  # python objects, element by element

    @property
    def count(self) -> int:
        if self.objects is not None:
            return len(self.objects)
        return self.table.num_rows


class JSONObjectStream:
    """Iterates a top-level JSON object: yields ``(key, value)`` for small values and Windows for big arrays."""

    def __init__(self, f: BinaryIO, name: str, *, big_arrays: set[str], fast_parse: Callable[[str, memoryview], Any],
                 window_bytes: int = 32 << 20, progress: Callable[[int], None] | None = None):
        self.f = f
        self.name = name
        self.big = big_arrays
        self.fast_parse = fast_parse
        self.window_bytes = window_bytes
        self.buf = bytearray(window_bytes + (1 << 20))
        self.end = 0  # valid bytes in buf
        self.pos = 0  # position in buf
        self.base = 0  # file offset of buf[0]
        self.eof = False
        self.progress = progress
        self.keys: list[str] = []  # top-level keys in file order

    # -- buffer -------------------------------------------------------------------------------------------
    def _fill(self, need: int) -> None:
        """Makes at least `need` bytes available after pos (or reaches EOF), reusing one buffer."""
        if self.end - self.pos >= need or self.eof:
            return
        rest = self.end - self.pos
        if rest:
            self.buf[:rest] = self.buf[self.pos:self.end]
        self.base += self.pos
        self.pos, self.end = 0, rest
        if len(self.buf) < need + (1 << 20):
            self.buf.extend(bytes(need + (1 << 20) - len(self.buf)))
        view = memoryview(self.buf)
        start = self.end
        while self.end < need and not self.eof:
            n = self.f.readinto(view[self.end:])
            if not n:
                self.eof = True
                break
            self.end += n
        if self.end > start and self.progress:
            self.progress(self.end - start)

    def _skip_ws(self) -> None:
        while True:
            self._fill(1)
            n = self.end
            while self.pos < n and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < n or self.eof:
                return

    def _peek(self) -> bytes:
        self._skip_ws()
        return bytes(self.buf[self.pos:min(self.pos + 1, self.end)])

    def _expect(self, ch: bytes, what: str) -> None:
        got = self._peek()
        if got != ch:
            raise self._error(f"expected {what}, found {got.decode(errors='replace')!r}" if got else f"expected {what}, found end of file")
        self.pos += 1

    def _offset(self) -> int:
        return self.base + self.pos

    def _error(self, msg: str) -> JSONStructureError:
        return JSONStructureError(f"{self.name}: at byte {self._offset()}: {msg}")

    def _decode_value(self) -> Any:
        """Decodes one complete JSON value at pos with the standard library (growing the buffer as needed)."""
        self._skip_ws()
        need = 1 << 12
        last = None
        while True:
            self._fill(need)
            chunk = bytes(self.buf[self.pos:min(self.end, self.pos + need)])
            text = chunk.decode("utf-8", errors="surrogateescape")
            try:
                value, end = _DECODER.raw_decode(text)
            except json.JSONDecodeError as e:
                # the same error at the same place with 4x more text is not truncation (long strings excepted)
                same = last == (e.pos, e.msg) and not e.msg.startswith("Unterminated")
                if same or (len(chunk) < need and self.eof):
                    raise self._error(f"malformed JSON at byte {self._offset() + len(text[:e.pos].encode('utf-8', errors='surrogateescape'))}: {e.msg}") from None
                last = (e.pos, e.msg)
                need *= 4
                continue
            if end == len(text) and not (len(chunk) < need and self.eof):
                need *= 4  # a number may continue past the window: decode again with more
                continue
            self.pos += len(text[:end].encode("utf-8", errors="surrogateescape"))
            return value

    # -- top level ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[str, Any] | Window]:
        self._expect(b"{", "a JSON object at the top level")
        if self._peek() == b"}":
            self.pos += 1
            return
        while True:
            key = self._decode_value()
            if not isinstance(key, str):
                raise self._error("expected an object key")
            self._expect(b":", "':' after a key")
            self.keys.append(key)
            if key in self.big and self._peek() == b"[":
                self.pos += 1
                yield from self._array(key)
            else:
                yield key, self._decode_value()
            nxt = self._peek()
            self.pos += 1
            if nxt == b"}":
                break
            if nxt != b",":
                self.pos -= 1
                raise self._error("expected ',' or '}' between top-level keys")
        self._skip_ws()
        if self.pos < self.end:
            raise self._error("trailing data after the top-level object")

    def _array(self, key: str) -> Iterator[Window]:
        index = 0
        if self._peek() == b"]":
            self.pos += 1
            return
        while True:
            self._fill(self.window_bytes)
            start = self.pos
            cut = None if self.eof else _last_match(_SEP_RE, self.buf, start, self.end)
            tried_end = -1  # the array-end candidates up to here were tried and refused
            if cut is not None and not self._same_kind(start, cut):
                # the last element in the buffer does not start like the first: likely the next array's,
                # so first try where this array seems to end (one guess, proved by parsing like any cut)
                first_end = _END_RE.search(self.buf, start, cut.start())
                window = self._try(key, index, start, first_end)
                if window is not None:
                    self.pos = first_end.end()
                    yield window
                    return
                tried_end = first_end.start() if first_end is not None else -1
            # 1. the last element separator in the buffer: right unless the array ends inside it
            window = self._try(key, index, start, cut)
            if window is not None:
                self.pos = cut.end()
                index += window.count
                yield window
                continue
            # 2. the end of the array inside the buffer: the first few candidates, then the last few (an array
            # followed by little, as a file's last big one is). Not all: elements holding lists of objects end
            # in `}]` too, and trying each of those would parse the window once per element
            window, m = self._try_ends(key, index, start, tried_end)
            if window is not None:
                self.pos = m.end()
                yield window
                return
            # 3. slow, exact: element by element
            log.info("%s: %s[%d...] decoded element by element (slow path)", self.name, key, index)
            window, done = self._exact_window(key, index)
            index += window.count
            yield window
            if done:
                return

    def _try_ends(self, key: str, index: int, start: int, tried: int) -> tuple[Window | None, re.Match | None]:
        """The first few array-end candidates after `tried`, then the last few; (window, its match) or Nones."""
        for m, _ in zip(_END_RE.finditer(self.buf, max(start, tried + 1), self.end), range(_END_TRIES)):
            window = self._try(key, index, start, m)
            if window is not None:
                return window, m
            tried = m.start()
        end = self.end
        for _ in range(_END_TRIES):
            m = _last_match(_END_RE, self.buf, start, end)
            if m is None or m.start() <= tried:
                break
            window = self._try(key, index, start, m)
            if window is not None:
                return window, m
            end = m.start()
        return None, None

    def _same_kind(self, start: int, cut: re.Match) -> bool:
        """Whether the element ending at `cut` starts with the same key as the element at `start` (a hint)."""
        before = _last_match(_SEP_RE, self.buf, start, cut.start())
        first = _FIRST_KEY_RE.match(self.buf, start)
        last = _FIRST_KEY_RE.match(self.buf, before.end() if before is not None else start)
        return first is None or last is None or first.group(1) == last.group(1)

    def _try(self, key: str, index: int, start: int, m: re.Match | None) -> Window | None:
        """Parses buf[start:m.start()+1] fast; None when the cut is wrong or the parser refuses it."""
        if m is None:
            return None
        try:
            table = self.fast_parse(key, memoryview(self.buf)[start:m.start() + 1])
        except FastParseError:
            return None
        return Window(key, index, self.base + start, table=table)

    def _exact_window(self, key: str, index: int) -> tuple[Window, bool]:
        objects: list = []
        start_offset = self._offset()
        limit = self._offset() + self.window_bytes
        while True:
            obj = self._decode_value()
            objects.append(obj)
            nxt = self._peek()
            self.pos += 1
            if nxt == b"]":
                return Window(key, index, start_offset, objects=objects), True
            if nxt != b",":
                self.pos -= 1
                raise self._error(f"expected ',' or ']' after {key}[{index + len(objects) - 1}]")
            if self._offset() >= limit:
                return Window(key, index, start_offset, objects=objects), False


def _last_match(regex: re.Pattern, buf, start: int, end: int):
    """The last match of `regex` in buf[start:end], searching backwards in growing tails."""
    span = 1 << 16
    while True:
        lo = max(start, end - span)
        last = None
        for m in regex.finditer(buf, lo, end):
            last = m
        if last is not None or lo == start:
            return last
        span *= 4
