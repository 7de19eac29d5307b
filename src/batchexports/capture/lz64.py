"""Reading `compression=lz64` bodies: lz-string's `compressToBase64`, as older posthog-js sends them.

The decoding itself is the `lzstring` package's. It has no limit on what it produces, and
lz-string output can grow quadratically with its input (every code may name the newest,
longest dictionary entry), so a few kilobytes can ask for gigabytes. `decoded_length` walks
the same bit stream counting characters only, and stops at the limit before anything is built;
PostHog's capture caps lz64 output the same way.
"""

from __future__ import annotations

from lzstring import LZString

BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_VALUES = {char: index for index, char in enumerate(BASE64_ALPHABET)}


class Lz64Error(ValueError):
    """Not lz-string data; the message says why."""


class Lz64TooLarge(ValueError):
    pass


class _Bits:
    """lz-string's bit reader over 6-bit values: low bit first within a code, high bit first within a char."""

    def __init__(self, values: list[int]) -> None:
        self.values = values
        self.value = values[0]
        self.position = 32
        self.index = 1

    def read(self, count: int) -> int:
        bits, power = 0, 1
        for _ in range(count):
            if self.value & self.position:
                bits |= power
            self.position >>= 1
            if self.position == 0:
                self.position = 32
                # Past the end lz-string's JavaScript reads nothing, i.e. zeros.
                self.value = self.values[self.index] if self.index < len(self.values) else 0
                self.index += 1
            power <<= 1
        return bits


def decoded_length(text: str, limit: int) -> int:
    """How many UTF-16 code units `text` decodes to; `Lz64TooLarge` as soon as that passes `limit`."""
    try:
        values = [_VALUES[char] for char in text]
    except KeyError as error:
        raise Lz64Error(f"character {error.args[0]!r} is not in lz-string's base64 alphabet") from None
    if not values:
        raise Lz64Error("there is no data")
    bits = _Bits(values)
    first = bits.read(2)
    if first == 2:
        return 0
    if first not in (0, 1):
        raise Lz64Error("the stream does not start with a character")
    bits.read(8 if first == 0 else 16)
    lengths = [0, 0, 0, 1]  # codes 0-2 are markers; entry 3 is the first character
    previous, total, width, enlarge_in = 1, 1, 3, 4
    while True:
        if bits.index > len(values):
            raise Lz64Error("the stream ends without its end marker")
        code = bits.read(width)
        if code == 2:
            return total
        if code in (0, 1):
            bits.read(8 if code == 0 else 16)
            lengths.append(1)
            code = len(lengths) - 1
            enlarge_in -= 1
            if enlarge_in == 0:
                enlarge_in, width = 1 << width, width + 1
        if code < len(lengths):
            entry = lengths[code]
        elif code == len(lengths):
            entry = previous + 1
        else:
            raise Lz64Error("the stream refers to a dictionary entry that does not exist")
        total += entry
        if total > limit:
            raise Lz64TooLarge(f"the lz64 body decodes to more than {limit} characters")
        lengths.append(previous + 1)
        previous = entry
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in, width = 1 << width, width + 1


def decompress(text: str, limit: int) -> str:
    """The text lz-string's `compressToBase64` made; `Lz64Error` / `Lz64TooLarge` when it can't be."""
    text = text.strip().replace(" ", "+")  # a '+' that form-encoding turned into a space
    decoded_length(text, limit)
    try:
        result = LZString.decompressFromBase64(text)
    except (IndexError, KeyError, ValueError):
        result = None
    if result is None:
        raise Lz64Error("the stream is corrupt")
    try:
        # lz-string works on UTF-16 code units: characters beyond the BMP arrive as surrogate pairs.
        return result.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeError:
        raise Lz64Error("the text holds a broken UTF-16 surrogate pair") from None
