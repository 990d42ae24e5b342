"""Captions from scene metadata: five different, correct English sentences that say only what can be heard.

The input is a finished scene spec (`train/corpus/scenes.py`): audible events in onset order with their measured
loudness, count of bursts, whether they are far away, how they group in time (`order`: runs of overlapping
events), an audible or masked background, and leading/trailing silence. The words come from the class table
(`classes.json`: noun phrases with their article, 3rd-person verbs, gerunds), so agreement and a/an are right by
construction, and are checked again here.

Every caption mentions every audible foreground event and the background when it is audible, and nothing else,
so all five are consistent with the audio; they differ in sentence pattern and synonyms. A caption is drawn at
random from the patterns below and kept when it passes `caption_problems` (8-20 words, no content word twice,
a/an right, distinct from the others); the scene builder draws the scene again if five cannot be found.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from train.corpus.mixing import SILENCE_MIN_SECONDS

MIN_WORDS, MAX_WORDS = 8, 20    # the range of Clotho captions and most AudioCaps ones
N_CAPTIONS = 5
MAX_TRIES = 400

# Words that may repeat in one caption: articles and the prepositions any two phrases may share.
FUNCTION_WORDS = frozenset("a an the and of in on at to is it by".split())
# "an" before these consonant-letter words, "a" before these vowel-letter ones (sound, not spelling).
AN_EXCEPTIONS = ("hour", "honest", "honou", "heir")
A_EXCEPTIONS = ("one", "once", "uni", "use", "usu", "eu", "ewe", "ukulele", "uran", "utensil")

LONG_FRACTION = 0.8     # an event covering this much of the scene is heard "throughout"

COUNT_WORDS = {1: ["", "", "once"], 2: ["twice", "two times"], 3: ["three times"]}
MANY_WORDS = ["repeatedly", "several times", "multiple times"]
LOUD_MANNER = ["loudly"]
LOUD_PLACE = ["nearby", "close by"]
FAINT_MANNER = ["faintly", "quietly", "softly"]
DISTANT_PLACE = ["in the distance", "far away"]
LONG_WORDS = ["continuously", "throughout", "the whole time"]

SEQUENCE = [", then {c}", ", and then {c}", " before {c}", ", after which {c}", ", followed by {g}"]
OVERLAP_2 = ["{c1} while {c2}", "{c1} as {c2}", "{c1} and {c2} at the same time", "{c1}, accompanied by {g2}"]
OVERLAP_3 = ["{c1} while {c2} and {c3}", "{c1} as {c2} and {c3}"]
BACKGROUND_TAIL = [" as {bc}", " while {bc}", " with {bg} in the background", " over the sound of {bg}"]
BACKGROUND_HEAD = ["{bc} steadily as {body}", "{bc} in the background while {body}",
                   "With {bg} in the background, {body}", "Over the sound of {bg}, {body}",
                   "{bc} throughout as {body}"]
LEAD_SILENCE = ["After a moment of silence, ", "After a short pause, ", "Following a few seconds of silence, "]
TAIL_SILENCE = [", then silence follows", ", followed by silence", " before it goes quiet",
                ", and then everything is quiet"]
MOSTLY_SILENT = [" in otherwise complete silence", " against a silent background"]


class CaptionError(ValueError):
    """No five valid captions could be written for a scene (the builder draws the scene again)."""


@dataclass(frozen=True)
class Mention:
    """One audible foreground event as the grammar sees it."""
    label: str
    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    gerunds: tuple[str, ...]
    count: int | None           # occurrences placed, for countable (repeatable) classes; None otherwise
    bursts: int                 # separate bursts in one occurrence (a clip of three barks has 3)
    loudness: str               # "loud", "normal" or "faint"
    distant: bool
    long: bool                  # lasts most of the scene


def _mentions(spec: dict, classes: dict) -> list[list[Mention]]:
    """Audible events as groups in temporal order (overlapping events share a group)."""
    events = spec["events"]
    groups = []
    for group in spec["order"]:
        row = []
        for i in group:
            event = events[i]
            if not event["audible"]:
                continue
            entry = classes[event["label"]]
            span = event["offset"] - event["onsets"][0]
            row.append(Mention(event["label"], tuple(entry["nouns"]), tuple(entry["verbs"]),
                               tuple(entry["gerunds"]),
                               event["count"] if entry.get("repeatable") else None,
                               event.get("bursts_per_occurrence", 1),
                               event["loudness"], event["distant"],
                               span >= LONG_FRACTION * spec["duration"]))
        if row:
            groups.append(row)
    return groups


SINGULAR_DETERMINERS = ("a ", "an ", "one ", "this ", "that ", "someone", "something", "somebody")


def is_plural(noun: str) -> bool:
    """Number of a noun phrase from the class table: "waves", "wind chimes", "fireworks" are plural; "a pair of
    scissors", "the sea", "glass", "rain", "machinery" are not (articles and mass nouns are singular)."""
    noun = noun.lower()
    if noun.startswith(SINGULAR_DETERMINERS):
        return False
    last = noun.split()[-1]
    return last.endswith("s") and not last.endswith(("ss", "us", "is"))


def verb_is_plural(verb: str) -> bool:
    return not verb.split()[0].endswith("s")


def agree(verb: str, plural: bool) -> str:
    """Inflect the first word of a present-tense predicate for the subject's number ("barks" <-> "bark",
    "is played" <-> "are played", "crashes" <-> "crash", "flies" <-> "fly"). Regular verbs only, which is
    what the class table holds."""
    if verb_is_plural(verb) == plural:
        return verb
    first, _, rest = verb.partition(" ")
    irregular = {"is": "are", "has": "have", "does": "do", "goes": "go", "was": "were"}
    if plural:
        if first in irregular:
            first = irregular[first]
        elif first.endswith("ies") and len(first) > 4:
            first = first[:-3] + "y"
        elif first.endswith(("ches", "shes", "sses", "xes", "zzes", "oes")):
            first = first[:-2]
        else:
            first = first[:-1]
    else:
        singular = {v: k for k, v in irregular.items()}
        if first in singular:
            first = singular[first]
        elif first.endswith("y") and first[-2:-1] not in tuple("aeiou"):
            first = first[:-1] + "ies"
        elif first.endswith(("ch", "sh", "s", "x", "z", "o")):
            first += "es"
        else:
            first += "s"
    return f"{first} {rest}" if rest else first


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _adverbs(m: Mention, rng: np.random.Generator) -> tuple[str, bool]:
    """(adverbs, whether they hold an exact count) for one mention, in the order English wants them:
    manner before count ("barks loudly twice"), place after ("barks twice in the distance")."""
    manner, place = "", ""
    if m.loudness == "loud":
        if rng.random() < 0.5:
            manner = _pick(rng, LOUD_MANNER)
        else:
            place = _pick(rng, LOUD_PLACE)
    elif m.loudness == "faint":
        if m.distant and rng.random() < 0.6:
            place = _pick(rng, DISTANT_PLACE)
        else:
            manner = _pick(rng, FAINT_MANNER)
    count, exact = "", False
    if m.count is not None:
        # A crop holding several bursts (three barks) is described by its repetitions only, never by an exact
        # number: burst detection is a guess, placements are facts.
        if m.bursts == 1 and m.count in COUNT_WORDS:
            count, exact = _pick(rng, COUNT_WORDS[m.count]), True
        elif m.count >= 4 or (m.count >= 2 and m.bursts > 1):
            count = _pick(rng, MANY_WORDS)
    elif m.long:
        count = _pick(rng, LONG_WORDS)
    if manner and count == "repeatedly":
        count, manner = f"{manner} and repeatedly", ""   # "barks loudly and repeatedly", not "loudly repeatedly"
    return " ".join(w for w in (manner, count, place) if w), exact and bool(count)


def _verb(m: Mention, rng: np.random.Generator, exact_count: bool) -> str:
    # A progressive ("is barking") with an exact count reads wrong ("is barking twice").
    verbs = [v for v in m.verbs if not (exact_count and v.startswith(("is ", "are ")))] or list(m.verbs)
    return _pick(rng, verbs)


def clause(m: Mention, rng: np.random.Generator) -> str:
    """Subject + verb + adverbs: "a dog barks twice in the distance", "waves crash"."""
    tail, exact = _adverbs(m, rng)
    noun = _pick(rng, m.nouns)
    return " ".join(w for w in (noun, agree(_verb(m, rng, exact), is_plural(noun)), tail) if w)


def nominal(m: Mention, rng: np.random.Generator) -> str:
    """Noun + gerund + adverbs: "a dog barking twice in the distance"."""
    tail, _ = _adverbs(m, rng)
    return " ".join(w for w in (_pick(rng, m.nouns), _pick(rng, m.gerunds), tail) if w)


def _group_clause(group: list[Mention], rng: np.random.Generator) -> str:
    if len(group) == 1:
        return clause(group[0], rng)
    if len(group) == 2:
        return _pick(rng, OVERLAP_2).format(c1=clause(group[0], rng), c2=clause(group[1], rng),
                                            g2=nominal(group[1], rng))
    return _pick(rng, OVERLAP_3).format(c1=clause(group[0], rng), c2=clause(group[1], rng),
                                        c3=clause(group[2], rng))


def _group_nominal(group: list[Mention], rng: np.random.Generator) -> str:
    parts = [nominal(m, rng) for m in group]
    if len(parts) == 1:
        return parts[0]
    together = " at the same time" if rng.random() < 0.5 else ""
    return ", ".join(parts[:-1]) + " and " + parts[-1] + together


def _body(groups: list[list[Mention]], rng: np.random.Generator) -> tuple[str, bool]:
    """The foreground description, and whether it is a nominal phrase (no finite verb)."""
    if rng.random() < 0.25:
        # Nominal style, as in many AudioCaps captions: "A dog barking followed by a bell ringing".
        text = _group_nominal(groups[0], rng)
        for group in groups[1:]:
            text += _pick(rng, [" followed by ", ", then ", " and then "]) + _group_nominal(group, rng)
        if rng.random() < 0.3:
            text = "the sound of " + text
        return text, True
    if len(groups) >= 2 and len(groups[0]) == 1 and rng.random() < 0.25:
        text = f"after {clause(groups[0][0], rng)}, {_group_clause(groups[1], rng)}"
        rest = groups[2:]
    else:
        text = _group_clause(groups[0], rng)
        rest = groups[1:]
    for group in rest:
        connector = _pick(rng, SEQUENCE)
        text += connector.format(c=_group_clause(group, rng), g=_group_nominal(group, rng))
    return text, False


def _background(spec: dict, classes: dict) -> dict | None:
    bg = spec.get("background")
    if not bg or not bg.get("audible"):
        return None
    return classes[bg["label"]]


def _compose(spec: dict, classes: dict, groups: list[list[Mention]], rng: np.random.Generator) -> str:
    body, is_nominal = _body(groups, rng)
    bg = _background(spec, classes)
    if bg is not None:
        noun = _pick(rng, bg["nouns"])
        bc = f"{noun} {agree(_pick(rng, bg['verbs']), is_plural(noun))}"
        bgn = f"{noun} {_pick(rng, bg['gerunds'])}"
        if not is_nominal and rng.random() < 0.35:
            return _pick(rng, BACKGROUND_HEAD).format(bc=bc, bg=bgn, body=body)
        return body + _pick(rng, BACKGROUND_TAIL).format(bc=bc, bg=bgn)
    # No background: the rest of the scene is silence, which is part of what is heard.
    silence = spec.get("silence", {})
    lead, tail = silence.get("lead", 0.0), silence.get("tail", 0.0)
    if lead >= SILENCE_MIN_SECONDS and not is_nominal and not body.startswith("after ") and rng.random() < 0.5:
        body = _pick(rng, LEAD_SILENCE) + body
    elif tail >= SILENCE_MIN_SECONDS and rng.random() < 0.6:
        body += _pick(rng, [", followed by silence"] if is_nominal else TAIL_SILENCE)
    elif lead + tail >= 0.5 * spec["duration"] and rng.random() < 0.6:
        body += _pick(rng, MOSTLY_SILENT)
    return body


def _finish(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+,", ",", text)
    return text[0].upper() + text[1:] + "."


def words(caption: str) -> list[str]:
    return re.findall(r"[a-z']+", caption.lower())


def stem(word: str) -> str:
    """Crude stem, enough to catch "sound ... sounding" or "talks ... talking" as one word said twice."""
    for suffix in ("ing", "es", "s", "ed"):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if suffix in ("ing", "ed") and word[-1] == word[-2] and word[-1] not in "lsfz":
                word = word[:-1]   # "drumming" ~ "drums", "popping" ~ "pops"
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word   # "chime" ~ "chimes" ~ "chiming"


def caption_problems(caption: str) -> list[str]:
    """What is wrong with a caption (empty when it is fine): length, repeated content words, a/an."""
    problems = []
    tokens = words(caption)
    if not MIN_WORDS <= len(tokens) <= MAX_WORDS:
        problems.append(f"{len(tokens)} words (want {MIN_WORDS}-{MAX_WORDS})")
    seen: set[str] = set()
    for token in tokens:
        if token in FUNCTION_WORDS:
            continue
        root = stem(token)
        # Also a compound ending in an earlier word or the reverse: "a heartbeat beats", "a waterfall falls".
        if root in seen or any(len(r) >= 4 and len(root) >= 4 and (r.endswith(root) or root.endswith(r))
                               for r in seen):
            problems.append(f"repeats {token!r}")
        seen.add(root)
    for article, following in zip(tokens, tokens[1:]):
        vowel = following[0] in "aeiou"
        if article == "a" and vowel and not following.startswith(A_EXCEPTIONS):
            problems.append(f"'a {following}' should be 'an {following}'")
        if article == "an" and not vowel and not following.startswith(AN_EXCEPTIONS):
            problems.append(f"'an {following}' should be 'a {following}'")
    return problems


def write_captions(spec: dict, classes: dict, rng: np.random.Generator, n: int = N_CAPTIONS) -> list[str]:
    """`n` distinct valid captions for a scene spec, or CaptionError."""
    groups = _mentions(spec, classes)
    if not groups:
        raise CaptionError(f"scene {spec.get('scene_id')} has no audible event to describe")
    captions: list[str] = []
    for _ in range(MAX_TRIES):
        caption = _finish(_compose(spec, classes, groups, rng))
        if caption not in captions and not caption_problems(caption):
            captions.append(caption)
            if len(captions) == n:
                return captions
    raise CaptionError(f"only {len(captions)} of {n} valid captions for scene {spec.get('scene_id')} "
                       f"({', '.join(m.label for g in groups for m in g)})")


def mentioned_labels(caption: str, classes: dict) -> set[str]:
    """Classes a caption names, by the class table's keywords (for checks and evaluation)."""
    tokens = set(words(caption))
    return {label for label, entry in classes.items() if tokens & {k.lower() for k in entry.get("keywords", [])}}
