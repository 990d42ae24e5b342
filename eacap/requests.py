"""What a caption request may ask for: the one definition of each limit, shared by the app, the CLI and the bench.

Everything a client sends (a slider value, an API argument, a command-line option) passes through here before any
work is done, and anything out of bounds raises `RequestError` (a ValueError) whose message names the argument,
the value it got (cut to 60 characters) and what is allowed:

    >>> whole_number("beam_size", "abc", *BEAM_SIZE)
    RequestError: beam_size must be a whole number from 1 to 8, got 'abc'

The limits bound what one request can cost: beam search keeps `beam_size` hypotheses per clip and runs up to
`max_length` decoder steps, so together they bound the decoding work of a caption.
"""
from __future__ import annotations

import math
import numbers
import re
import reprlib

from .decoding import DecodingOptions

BEAM_SIZE = (1, 8)         # beam width; 1 is greedy
MAX_LENGTH = (1, 47)       # generated tokens, </s> included; each model's decoder caps it too (its max_length - 1)
MODEL_NAME_MAX = 200       # characters of a checkpoint folder or Hub id
SHOWN_MAX = 60             # characters of a refused value a message repeats

_WHOLE = re.compile(r"[+-]?\d{1,18}(\.0*)?")
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _repr.maxlong = SHOWN_MAX
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4
_repr.maxlevel = 2


class RequestError(ValueError):
    """A request argument is out of bounds; the message names it, the value and the allowed range."""


def shown(value) -> str:
    """`value` as a message repeats it: its repr, at most SHOWN_MAX characters, computed without reading all of a
    huge string or list (numpy scalars show as the plain number they hold)."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, str):
        value = value[: SHOWN_MAX + 1]
    try:
        text = _repr.repr(value)
    except Exception:  # an int of over 4300 digits, an object whose repr fails: say what it is instead
        text = (f"an integer of about {round(value.bit_length() * math.log10(2))} digits" if isinstance(value, int) else
                f"a {type(value).__name__} that cannot be shown")
    return text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 1] + "…"


def whole_number(name: str, value, low: int, high: int) -> int:
    """`value` as an int within [low, high], or RequestError.

    Accepted: an int, a whole float (3.0: Gradio sliders send floats), a string of a whole number ("3", " 3 ").
    Refused: bool (True is not a beam size), None, containers, NaN/inf, fractions (3.5), other text, anything out of
    range.
    """
    number = _as_int(value)
    if number is None or not low <= number <= high:
        raise RequestError(f"{name} must be a whole number from {low} to {high}, got {shown(value)}")
    return number


def _as_int(value) -> int | None:
    if isinstance(value, bool):  # an int to Python, but True is not a beam size (numpy's bool is no number at all)
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return int(number) if math.isfinite(number) and number.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        return int(float(text)) if _WHOLE.fullmatch(text) else None
    return None


def decoding_request(beam_size, max_length, *models) -> DecodingOptions:
    """`DecodingOptions` for a request's beam size and maximum length, checked against the shared limits and against
    the decoder of each model given (anything with `config.decoder.max_length`); RequestError if out of bounds."""
    options = DecodingOptions(beam_size=whole_number("beam_size", beam_size, *BEAM_SIZE),
                              max_length=whole_number("max_length", max_length, *MAX_LENGTH))
    for model in models:
        try:
            options.validate(model.config.decoder.max_length)
        except ValueError as error:
            raise RequestError(str(error)) from None
    return options


def model_name(value) -> str:
    """A checkpoint folder or Hub id as a request names it: text, stripped, 1 to MODEL_NAME_MAX characters."""
    if not isinstance(value, str):
        raise RequestError(f"model must be a checkpoint folder or Hub id as text, got {shown(value)}")
    name = value.strip()
    if not 1 <= len(name) <= MODEL_NAME_MAX:
        got = "an empty name" if not name else f"{len(name)} characters ({shown(name)})"
        raise RequestError(f"model must be a name of 1 to {MODEL_NAME_MAX} characters, got {got}")
    return name


def total_seconds(seconds: dict[str, float]) -> float:
    """The total time of a caption: the sum of its model stages (front-end, encoder, decoder), i.e. every entry but
    "load" (reading and decoding the file, shared by every model that hears it, so left out of comparisons) and
    "total" itself, if it is already there."""
    return sum(value for stage, value in seconds.items() if stage not in ("load", "total"))
