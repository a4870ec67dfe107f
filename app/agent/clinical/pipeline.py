"""The shared clinical NLP pipeline: medspaCy on a blank English spaCy model (no model download).

One ``Language`` per process, built on first use and cached (``get_nlp``):

    medspacy tokenizer → spaCy's rule-based ``sentencizer`` (+ line-break boundaries)
    → medspaCy ``Sectionizer`` → ``TargetMatcher`` → ``ConText`` (irAE terms) → ``ConText`` (exposure)

PyRuSH (medspaCy's default sentence splitter) is not used: it logs token text at DEBUG and was
measured ~15x slower. All rules are data files in ``rules/`` (reviewed like code):
``sections.yaml`` (headers → normalised categories), ``targets.yaml`` (irAE terms, checkpoint
inhibitors), ``context.yaml`` (ConText modifiers of irAE terms: negation, uncertainty, history,
family, attribution, alternative causes, treatment), ``exposure.yaml`` (a second ConText over
checkpoint-inhibitor mentions: given vs named-but-not-given).

Stable API (other modules import it; extend, never break):

- ``get_nlp()`` → the cached Language (all components);
- ``sections(text)`` → ``list[Section]`` (``category`` normalised, see ``CATEGORIES``; ``None`` for
  text before the first header), char offsets into ``text``, body included;
- ``sentences(text)`` → ``list[(start, end)]`` char spans;
- ``process(text)`` / ``process_many(texts)`` → spaCy ``Doc`` with sections, targets and ConText.

Nothing here logs note text: the loggers of medspaCy, PyRuSH and their helpers are held at
WARNING and loguru's output for them is disabled (tests/unit/test_clinical_pipeline.py checks it
with a canary name).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml


class _HeavyImportBlocker:
    """Refuses torch and scikit-learn while spaCy and medspaCy are imported.

    thinc (under spaCy) imports torch when it is installed, only to offer torch models, and
    medspaCy imports quickumls → nltk, which reaches for scikit-learn; this pipeline uses
    neither. Blocked, they stay out of the process (about 0.5 GB of RSS and 2 s of start-up on
    the draft path); a later ``import torch`` elsewhere (the ONNX exporter) still works, since
    nothing is cached in ``sys.modules``. Only a finder raising ImportError is used: a ``None``
    in ``sys.modules`` would break scipy, which probes ``sys.modules["torch"]``.
    """

    BLOCKED = ("torch", "sklearn")

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(f"{name} is not used by the clinical pipeline", name=name)
        return None


def _import_nlp_libraries() -> None:
    """Import spaCy and medspaCy once, without torch or scikit-learn (see _HeavyImportBlocker)."""
    import sys

    if "medspacy" in sys.modules:
        return
    blocker = None
    if not any(m in sys.modules for m in _HeavyImportBlocker.BLOCKED):
        blocker = _HeavyImportBlocker()
        sys.meta_path.insert(0, blocker)
    try:
        import medspacy  # noqa: F401
        import spacy  # noqa: F401
    finally:
        if blocker is not None:
            sys.meta_path.remove(blocker)

RULES_DIR = Path(__file__).resolve().parent / "rules"
CATEGORIES = (
    "chief_complaint", "hpi", "ros", "history", "family_history", "social_history", "problem_list",
    "medications", "allergies", "vitals", "physical_exam", "labs", "imaging", "pathology", "assessment",
    "plan", "assessment_and_plan", "hospital_course", "consent_education", "other",
)
_QUIET_LOGGERS = ("medspacy", "PyRuSH", "PyFastNER", "quickumls", "spacy", "pysbd")
_LOCK = threading.RLock()
_NLP: Any = None
_SECTION_PIPES = ("sentencizer", "medspacy_sectionizer")
_NOTE_PIPES = ("sentencizer", "medspacy_sectionizer", "medspacy_target_matcher")


@dataclass(frozen=True)
class Section:
    category: str | None
    title: str
    start: int  # header start (== body start when there is no header)
    end: int  # end of the body
    body_start: int


def quiet_third_party_logs() -> None:
    """Hold medspaCy/PyRuSH and friends at WARNING; silence loguru for them (no note text in logs)."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from loguru import logger as loguru_logger
    except ImportError:  # pragma: no cover - loguru comes with PyRuSH
        return
    for name in ("PyRuSH", "PyFastNER", "medspacy", "quickumls"):
        loguru_logger.disable(name)


def load_yaml(name: str) -> Any:
    with (RULES_DIR / name).open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _phrases(values: Iterable[object], where: str) -> list[str]:
    """Rule phrases must be strings: YAML reads a bare no/on/off as a boolean, so quote them."""
    out = []
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"{where}: {v!r} is not a string (quote it in the YAML file)")
        out.append(v)
    return out


# A header starts a line: after a line break, at the start of the text, after a sentence end
# ("... resolved. Plan: ..."), or after a markdown/bullet mark ("# Allergies", "- Plan:").
# Dictation speaks the punctuation: "... at rest period assessment colon ...".
HEADER_START = r"(?:[\n\r]+\s*|[.;!?]\s+|\b(?:period|full stop)\s+|^[#*>\u2022-]+\s*)$"


def section_rules() -> list[Any]:
    """SectionRules from sections.yaml as phrase literals (spaCy's PhraseMatcher: fast): "Title:" and
    the dictated "Title colon" for every title, and the bare "Title" for those not listed under
    ``colon_required``; the Sectionizer
    keeps only headers that start a line (``HEADER_START``)."""
    _import_nlp_libraries()
    from medspacy.section_detection import SectionRule

    data = load_yaml("sections.yaml")
    colon_required = {t.lower() for t in _phrases(data.get("colon_required", []), "sections.yaml colon_required")}
    rules = []
    for category, titles in data["categories"].items():
        if category not in CATEGORIES:
            raise ValueError(f"sections.yaml: unknown category {category}")
        for title in sorted({t.lower() for t in _phrases(titles, f"sections.yaml {category}")}):
            rules.append(SectionRule(literal=f"{title}:", category=category))
            rules.append(SectionRule(literal=f"{title} colon", category=category))  # dictated
            if title not in colon_required:
                rules.append(SectionRule(literal=title, category=category))
    return rules


def target_rules() -> list[Any]:
    _import_nlp_libraries()
    from medspacy.target_matcher import TargetRule

    rules = []
    for item in load_yaml("targets.yaml")["targets"]:
        meta = {k: v for k, v in item.items() if k not in ("literal", "category", "pattern", "variants")}
        for literal in _phrases([item["literal"], *item.get("variants", [])], "targets.yaml"):
            rules.append(TargetRule(literal=literal, category=item["category"],
                                    pattern=item.get("pattern"), metadata=dict(meta, canonical=item["literal"])))
    return rules


def context_rules(name: str = "context.yaml") -> list[Any]:
    _import_nlp_libraries()
    from medspacy.context import ConTextRule

    rules = []
    seen: dict[str, str] = {}
    for item in load_yaml(name)["modifiers"]:
        literals = _phrases(item.get("literals") or [item["literal"]], f"{name} {item['category']}")
        for literal in literals:
            # two rules on the same words match the same span and medspaCy's matcher keeps one of
            # them (which one depends on rule ids), so a repeated literal would silently drop a cue
            key = literal.lower()
            if key in seen and item.get("pattern") is None:
                raise ValueError(f"{name}: {literal!r} is listed twice ({seen[key]} and {item['category']}); "
                                 "list it once, with direction BIDIRECTIONAL if both directions are meant")
            seen[key] = item["category"]
            kwargs: dict[str, Any] = {"direction": item.get("direction", "BIDIRECTIONAL")}
            if item.get("max_scope") is not None:
                kwargs["max_scope"] = int(item["max_scope"])
            if item.get("max_targets") is not None:
                kwargs["max_targets"] = int(item["max_targets"])
            if item.get("allowed_types"):
                kwargs["allowed_types"] = set(item["allowed_types"])
            if item.get("excluded_types"):
                kwargs["excluded_types"] = set(item["excluded_types"])
            if item.get("pattern") is not None and len(literals) == 1:
                kwargs["pattern"] = item["pattern"]
            rules.append(ConTextRule(literal=literal, category=item["category"], **kwargs))
    return rules


_PUNCT_END = (".", ":", ";", "!", "?")
_BULLETS = "-*•#>("
# A line ending in one of these words continues on the next line whatever its first letter is
# ("... reconsider delayed ICI hepatitis if\nALT fails to fall"): a sentence does not end on them.
_CONTINUES = frozenset((
    "a", "an", "the", "and", "or", "nor", "but", "if", "of", "to", "in", "on", "at", "by", "for", "from", "with",
    "without", "into", "onto", "than", "as", "vs", "versus", "per", "after", "before", "since", "due", "because",
    "that", "which", "who", "whose", "whom", "is", "was", "are", "were", "be", "been", "being", "has", "had",
    "have", "no", "not", "her", "his", "their", "its", "this", "these", "those", "very", "more", "most", "less",
    "likely", "possible", "probable", "secondary", "related", "consistent", "suggestive", "favour", "favor",
    "despite", "until", "unless", "while", "when", "where", "whether", "either", "neither", "both", "also",
    "then", "so", "such", "about", "over", "under", "between", "against", "toward", "towards", "via", "plus",
))
WRAP_WIDTH = 60  # a line at least this long that ends inside a sentence was wrapped by the editor
_LIST_MARKS = "-*•"
# verbs and adjectives that need what follows them ("no consolidation to suggest" / "pneumonitis")
_NEEDS_OBJECT = frozenset(("suggest", "suggesting", "include", "includes", "including", "represent",
                           "representing", "exclude", "excluding", "showing", "shows", "show", "revealed", "reveals",
                           "demonstrating", "demonstrates", "concerning", "worrisome", "compatible", "c/w",
                           "requiring", "needing", "started", "starting", "given", "received", "receiving"))
# dictation: a spoken sentence end ("period", "full stop", "new paragraph"); not "a period of"
_NOT_SPOKEN_END = frozenset(("a", "the", "this", "that", "same", "washout", "menstrual", "observation", "time",
                             "trial", "grace", "short", "long", "brief", "refractory", "window", "treatment",
                             "follow-up", "study", "incubation", "latent", "last", "first", "symptom-free", "new"))
RUN_ON_CHARS = 100  # a "sentence" longer than this is dictation's comma splice: split it at its clauses


def _line_len(doc, tok, cache: list[str]) -> int:  # type: ignore[no-untyped-def]
    """Characters from the start of ``tok``'s line to its end."""
    if not cache:
        cache.append(doc.text)
    return tok.idx + len(tok.text) - (cache[0].rfind("\n", 0, tok.idx) + 1)


def _split_run_ons(doc, tags) -> None:  # type: ignore[no-untyped-def]
    """Dictation joins sentences with commas ("... on room air, Infection has been excluded, Plan
    ..."). In a sentence longer than ``RUN_ON_CHARS``, a comma followed by a capitalised word and
    then a lower-case word starts a new sentence (not "Colitis, Grade 2", not "CTCAE", not a list
    of names)."""
    starts = [i for i, t in enumerate(tags) if t] + [len(doc)]
    if len(starts) < 2:
        starts = [0, len(doc)]
    for a, b in zip(starts, starts[1:], strict=False):
        if b - a < 8 or doc[b - 1].idx + len(doc[b - 1].text) - doc[a].idx <= RUN_ON_CHARS:
            continue
        for j in range(a + 1, b - 2):
            if doc[j].text != ",":
                continue
            w, nxt = doc[j + 1], doc[j + 2]
            if (w.text[:1].isupper() and w.text[1:].islower() and len(w.text) > 1 and w.is_alpha
                    and ((nxt.is_alpha and nxt.text[:1].islower()) or nxt.text == "-")):
                tags[j + 1] = True


def _clinical_sentencizer_factory() -> None:
    """Register ``clinical_sentencizer``: spaCy's rule-based Sentencizer (punctuation), plus a new
    sentence after a blank line, or after a line break that follows punctuation or is followed by a
    capital, a digit, a bullet or a header. A wrapped line continuing in lower case stays one
    sentence. Boundaries are set the Sentencizer's way (fast), not token by token."""
    _import_nlp_libraries()
    from spacy.language import Language
    from spacy.pipeline import Sentencizer

    if "clinical_sentencizer" in Language.factories:
        return

    class ClinicalSentencizer(Sentencizer):
        def predict(self, docs):  # type: ignore[no-untyped-def]
            guesses = super().predict(docs)
            for doc, tags in zip(docs, guesses, strict=False):
                n = len(doc)
                cache: list[str] = []  # doc.text, built on first need (it is rebuilt on every access)

                for tok in doc:
                    i = tok.i
                    if tok.text == "?" and i + 1 < n and tags[i + 1] and doc[i + 1].text[:1].islower():
                        tags[i + 1] = False  # "? pneumonitis": a query mark, not a sentence end
                    prev = doc[i - 1].lower_ if i > 0 else ""
                    spoken_period = (tok.lower_ == "period" and i > 0 and prev not in _NOT_SPOKEN_END
                                     and (i + 1 >= n or doc[i + 1].lower_ not in ("of", ",", "-", "/", ".", ")")))
                    if spoken_period or (tok.lower_ == "stop" and prev == "full") or (
                            tok.lower_ == "paragraph" and prev == "new"):
                        if i + 1 < n:  # dictation: "... on room air period assessment colon ..."
                            tags[i + 1] = True
                        continue
                    gap = tok.text if tok.is_space else tok.whitespace_
                    if i + 1 >= n or "\n" not in gap:
                        continue
                    nxt = doc[i + 1]
                    if nxt.is_space:
                        continue
                    before = doc[i - 1] if tok.is_space and i > 0 else (None if tok.is_space else tok)
                    ends = before is None or before.text[-1:] in _PUNCT_END
                    first = nxt.text[:1]
                    caps_run = before is not None and before.text.isupper() and nxt.text.isupper()
                    wrapped = False
                    if before is not None and not ends and first.isupper() and before.text[-1:] in ",/&+":
                        wrapped = True  # "... thyroid problems,\nHypophysitis, adrenal ..."
                    elif (before is not None and not ends and first.isupper() and not caps_run
                            and before.text.isalpha()):
                        if before.text.lower() in _CONTINUES:
                            wrapped = True
                        elif before.text.islower():  # a long line cut mid-sentence, the next one not a header ("Plan:")
                            header = i + 2 < n and doc[i + 2].text == ":"
                            wrapped = _line_len(doc, before, cache) >= WRAP_WIDTH and not header
                    bullet = first in _BULLETS
                    if first == "(" and not (i + 3 < n and (doc[i + 2].text.isdigit() or len(doc[i + 2].text) == 1
                                                            or doc[i + 2].lower_ in ("ii", "iii", "iv"))
                                             and doc[i + 3].text == ")"):
                        bullet = False  # "(colitis/diarrhoea), liver ..." goes on; "(1)", "(a)" list items
                    if (bullet and before is not None and not ends and first in _LIST_MARKS and i + 2 < n
                            and (doc[i + 2].text[:1].islower() or doc[i + 2].text == "(")):
                        # a sentence wrapped over two list items ("- Not consistent with" / "- immune
                        # hepatitis"): the line stops inside the sentence and the item goes on in lower case
                        b = before.text.lower()
                        bullet = not (b[-1:] in ",/(-" or b in _CONTINUES or b in _NEEDS_OBJECT
                                      or _line_len(doc, before, cache) >= WRAP_WIDTH)
                    if gap.count("\n") >= 2 or ends or first.isdigit() or bullet or (
                            first.isupper() and not caps_run and not wrapped):  # an ALL-CAPS report wraps its lines
                        tags[i + 1] = True
                _split_run_ons(doc, tags)
            return guesses

    @Language.factory("clinical_sentencizer", default_config={"punct_chars": None})
    def make_clinical_sentencizer(nlp, name, punct_chars):  # type: ignore[no-untyped-def]
        return ClinicalSentencizer(name, punct_chars=punct_chars, overwrite=True)


def build_nlp() -> Any:
    """A new pipeline (use ``get_nlp()`` for the cached one)."""
    quiet_third_party_logs()
    # a medspaCy matcher with only phrase rules warns W036 about its empty token matcher on every doc
    warnings.filterwarnings("ignore", message=r"\[W036\]")
    _import_nlp_libraries()
    import medspacy

    quiet_third_party_logs()
    _clinical_sentencizer_factory()
    nlp = medspacy.load(medspacy_enable=["medspacy_tokenizer"], load_rules=False)
    nlp.add_pipe("clinical_sentencizer", name="sentencizer")
    sectionizer = nlp.add_pipe("medspacy_sectionizer", config={
        "rules": None, "span_attrs": None, "apply_sentence_boundary": True, "require_start_line": True,
        "newline_pattern": HEADER_START})
    sectionizer.add(section_rules())
    matcher = nlp.add_pipe("medspacy_target_matcher")
    matcher.add(target_rules())
    context = nlp.add_pipe("medspacy_context", config={"rules": None, "span_attrs": None})
    context.add(context_rules("context.yaml"))
    exposure = nlp.add_pipe("medspacy_context", name="exposure_context", config={"rules": None, "span_attrs": None})
    exposure.add(context_rules("exposure.yaml"))
    return nlp


def get_nlp() -> Any:
    """The process-wide pipeline, built once (thread-safe)."""
    global _NLP
    if _NLP is None:
        with _LOCK:
            if _NLP is None:
                _NLP = build_nlp()
    return _NLP


def _run(text: str, pipes: Iterable[str] | None = None) -> Any:
    nlp = get_nlp()
    with _LOCK, warnings.catch_warnings():  # spaCy's vocab is shared: one document at a time
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        doc = nlp.make_doc(text)
        for name, proc in nlp.pipeline:
            if pipes is None or name in pipes:
                doc = proc(doc)
    return doc


def process(text: str) -> Any:
    """The full pipeline on one text: sentences, sections, targets (``doc.ents``), ConText."""
    return _run(text)


def note_doc(text: str) -> Any:
    """Sentences, sections and targets of a whole note, without ConText (fast)."""
    return _run(text, _NOTE_PIPES)


def context_docs(texts: list[str]) -> list[Any]:
    """Targets and both ConText passes on short texts (sentences that hold a target): ConText's
    cost grows with the square of the modifiers in a doc, so it runs per sentence, not per note."""
    nlp = get_nlp()
    pipes = [(n, p) for n, p in nlp.pipeline if n in ("sentencizer", "medspacy_target_matcher", "medspacy_context",
                                                      "exposure_context")]
    out = []
    with _LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        for text in texts:
            doc = nlp.make_doc(text)
            for _name, proc in pipes:
                doc = proc(doc)
            out.append(doc)
    return out


def process_many(texts: Iterable[str], batch_size: int = 32) -> Iterator[Any]:
    nlp = get_nlp()
    with _LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\[W036\]")
        yield from nlp.pipe(texts, batch_size=batch_size)


def doc_sections(doc: Any, text: str | None = None) -> list[Section]:
    """Sections of a processed doc; pass ``text`` (== doc.text) to spare rebuilding it."""
    text = doc.text if text is None else text
    out: list[Section] = []
    for sec in doc._.sections:
        b0, b1 = sec.body_span
        h0, h1 = sec.title_span
        body_start = doc[b0].idx if b0 < len(doc) else len(text)
        end = doc[b1 - 1].idx + len(doc[b1 - 1].text) if b1 > b0 else body_start
        if sec.category is None:
            out.append(Section(None, "", body_start, max(end, body_start), body_start))
            continue
        start = doc[h0].idx
        title = text[start:doc[h1 - 1].idx + len(doc[h1 - 1].text)].strip(" \t\r\n#*>-:")
        while start > 0 and text[start - 1] in "#*>\u2022- \t":  # the header's markdown/bullet mark
            start -= 1
        out.append(Section(sec.category, title, start, max(end, body_start), body_start))
    for i in range(len(out) - 1):  # a mark moved into the next header leaves the previous body
        if out[i].end > out[i + 1].start:
            prev = out[i]
            out[i] = Section(prev.category, prev.title, prev.start, max(out[i + 1].start, prev.body_start),
                             prev.body_start)
    if out and out[0].category is None and out[0].end <= out[0].start and len(out) > 1:
        out.pop(0)
    return out


@lru_cache(maxsize=256)
def _sections_cached(text: str) -> tuple[Section, ...]:
    return tuple(doc_sections(_run(text, _SECTION_PIPES)))


def sections(text: str) -> list[Section]:
    """Sections of ``text`` (char offsets into it, header and body); empty text → []."""
    if not text.strip():
        return []
    return list(_sections_cached(text))


def doc_sentences(doc: Any, text: str | None = None) -> list[tuple[int, int]]:
    spans = []
    text = doc.text if text is None else text  # doc.text is rebuilt from the tokens on every access
    for sent in doc.sents:
        start, end = sent.start_char, sent.end_char
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of ``text`` (spaCy sentencizer, line-break rules, section headers apart)."""
    if not text.strip():
        return []
    return doc_sentences(_run(text, _SECTION_PIPES))


def section_at(secs: list[Section], pos: int) -> Section | None:
    """The section containing char offset ``pos``."""
    for sec in secs:
        if sec.start <= pos < max(sec.end, sec.start + 1):
            return sec
    return None
