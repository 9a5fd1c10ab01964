"""How much model a request needs: a score in [0, 1] and the tier it falls in. Pure, offline.

Each signal has a strength ``s`` in [0, 1] (from the request's features and cheap scans of
its last user text and system text) and a configured weight ``w``; the score is

    raw   = sum(w_i * s_i)
    score = 1 - exp(-raw)          (0 for nothing, towards 1 as signals add up; monotone)

and the tier is ``economy`` below ``economy_below``, ``frontier`` from ``frontier_from`` on,
``standard`` between. The reasons are the three largest contributions ``w_i * s_i``.

Speed: text scans are ``str.find`` (memchr) loops with a bounded number of hits over the
whole text, and substring tests over a lower-cased head-and-tail window of it, so a 128k
character prompt scores in tens of microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from arbstr.apis.base import ApiRequest
from arbstr.config.complexity import ComplexitySettings

Tier = str  # "economy" | "standard" | "frontier"
ECONOMY, STANDARD, FRONTIER = "economy", "standard", "frontier"

WINDOW = 2048  # characters from each end of a text the marker scans read
_MAX_BACKTICKS = 256  # backticks looked at for fences (a fence or inline code each)
_MAX_SLASHES = 32  # slashes looked at for file paths
_SIZE_FLOOR = 256  # tokens: smaller prompts add nothing for size
_SIZE_FULL = 32768  # tokens: the size signal saturates here
_TOOLS_FULL = 16
_TURNS_FLOOR, _TURNS_FULL = 2, 64

# words of the window (lower-cased, punctuation split off); a phrase counts when its first
# word is there and the phrase is in the window
_REASONING = frozenset(
    {
        "prove",
        "proof",
        "derive",
        "derivation",
        "why",
        "analyze",
        "analyse",
        "analysis",
        "trade-off",
        "trade-offs",
        "tradeoff",
        "tradeoffs",
        "justify",
        "rigorous",
        "rigorously",
    }
)
_REASONING_PHRASES = (
    ("step", " step by step"),
    ("step-by-step", ""),
    ("think", " think through"),
    ("reason", " reason through"),
    ("pros", " pros and cons"),
)
_MATH = frozenset(
    {
        "equation",
        "equations",
        "integral",
        "derivative",
        "theorem",
        "lemma",
        "eigenvalue",
        "eigenvalues",
        "polynomial",
    }
)
_LATEX = ("\\frac", "\\int", "\\sum", "\\sqrt", "\\begin{", "$$")
_SYMBOLS = ("∫", "∑")
_PUNCTUATION = ("?", ",", ".", ":", ";", "(", ")", "!", '"', "*", "`")


@dataclass(frozen=True, slots=True)
class Complexity:
    score: float  # in [0, 1]
    reasons: tuple[str, ...]  # up to three, the largest contribution first
    tier: Tier


def score(req: ApiRequest, settings: ComplexitySettings) -> Complexity:
    """Score one request (deterministic: the same request and settings, the same result)."""
    f = req.features
    text = req.last_user_text or ""
    system = f.system_text or ""
    tokens = req.text_chars // 4
    window = _window(text) + _window(system) if system else _window(text)
    words = _words(window)
    fences = _fences(text) + (_fences(system) if system else 0)
    paths = _paths(text)
    reasoning = len(_REASONING.intersection(words))
    for first, phrase in _REASONING_PHRASES:
        if first in words and (not phrase or phrase in window):
            reasoning += 1
    maths = len(_MATH.intersection(words)) + _latex(window)

    # (signal, strength, reason)
    found = (
        ("prompt_size", _log_scale(tokens, _SIZE_FLOOR, _SIZE_FULL), _size_reason(tokens)),
        ("reasoning", min(1.0, reasoning / 2), "reasoning"),
        ("math", min(1.0, maths / 2), "math"),
        ("code", min(1.0, (fences + 1) // 2 / 2), "code"),
        ("file_paths", min(1.0, paths / 3), "file paths"),
        ("tools", _log_scale(f.tools + 1, 1, _TOOLS_FULL + 1), f"tools ({f.tools})"),
        ("tool_results", min(1.0, f.tool_results / 4), "tool results"),
        (
            "conversation",
            _log_scale(f.turns, _TURNS_FLOOR, _TURNS_FULL),
            f"deep conversation ({f.turns} turns)",
        ),
        ("images", min(1.0, f.images / 2), "images"),
        ("json_output", _json_strength(f.response_format), "json output"),
        ("tool_choice", 1.0 if f.tool_choice_required else 0.0, "tool call required"),
    )
    weights = settings.weights
    raw = 0.0
    parts: list[tuple[float, int, str]] = []
    for i, (name, strength, reason) in enumerate(found):
        contribution = weights.get(name, 0.0) * strength
        if contribution > 0:
            raw += contribution
            parts.append((-contribution, i, reason))
    parts.sort()
    value = min(1.0, max(0.0, 1.0 - math.exp(-raw)))
    return Complexity(
        score=value,
        reasons=tuple(reason for _, _, reason in parts[:3]),
        tier=tier_of(value, settings),
    )


def tier_of(value: float, settings: ComplexitySettings) -> Tier:
    if value < settings.economy_below:
        return ECONOMY
    if value >= settings.frontier_from:
        return FRONTIER
    return STANDARD


def _log_scale(n: int, floor: int, full: int) -> float:
    """0 up to ``floor``, 1 from ``full`` on, logarithmic between."""
    if n <= floor:
        return 0.0
    if n >= full:
        return 1.0
    return math.log(n / floor) / math.log(full / floor)


def _size_reason(tokens: int) -> str:
    shown = f"{tokens // 1000}k" if tokens >= 1000 else str(tokens)
    return f"long prompt ({shown} tokens)"


def _json_strength(fmt: str | None) -> float:
    if fmt == "json_schema":
        return 1.0
    return 0.5 if fmt == "json_object" else 0.0


def _window(text: str) -> str:
    """The lower-cased head and tail of a text, whitespace as spaces, a space in front."""
    if len(text) > 2 * WINDOW:
        text = text[:WINDOW] + " " + text[-WINDOW:]
    return " " + text.lower().replace("\n", " ").replace("\t", " ")


def _words(window: str) -> set[str]:
    """The window's words with punctuation split off (``why?`` -> ``why``)."""
    for p in _PUNCTUATION:
        if p in window:
            window = window.replace(p, " ")
    return set(window.split())


def _latex(window: str) -> int:
    hits = 0
    if "\\" in window or "$" in window:
        hits += sum(1 for m in _LATEX if m in window)
    return hits + sum(1 for m in _SYMBOLS if m in window)


def _fences(text: str) -> int:
    """Code fences (```), up to four (two blocks saturate the signal); at most
    ``_MAX_BACKTICKS`` backticks are looked at."""
    fences = 0
    pos = text.find("`")
    seen = 0
    while pos >= 0 and seen < _MAX_BACKTICKS:
        seen += 1
        if text.startswith("```", pos):
            fences += 1
            if fences >= 4:
                return fences
            pos = text.find("`", pos + 3)
        else:
            pos = text.find("`", pos + 1)
    return fences


def _paths(text: str) -> int:
    """File-path-looking words (``src/x.py``, ``./a/b``, ``C:\\dir``), up to three: words
    around a slash whose last part has an extension or that start with ``./`` or ``../``
    (URLs do not count); plus Windows drive paths."""
    found = 0
    pos = text.find("/")
    seen = 0
    end = -1  # the end of the last word counted
    while pos >= 0 and seen < _MAX_SLASHES and found < 3:
        seen += 1
        if pos > end:
            low = max(0, pos - 256)
            start = max(text.rfind(" ", low, pos), text.rfind("\n", low, pos), low - 1) + 1
            stop = _word_end(text, pos)
            if _is_path(text[start:stop]):
                found += 1
                end = stop
        pos = text.find("/", pos + 1)
    if found < 3 and ":\\" in text[:WINDOW]:
        found += 1
    return found


def _word_end(text: str, pos: int) -> int:
    stop = min(len(text), pos + 256)
    for sep in (" ", "\n"):
        i = text.find(sep, pos, stop)
        if i >= 0:
            stop = i
    return stop


def _is_path(word: str) -> bool:
    word = word.strip("'\"`(<[").rstrip(".:;,)`")
    if "://" in word or len(word) < 3:
        return False
    if word.startswith(("./", "../", "~/")):
        return True
    last = word.rpartition("/")[2]
    name, dot, ext = last.rpartition(".")
    return bool(dot and name and 1 <= len(ext) <= 5 and ext.isalnum())
