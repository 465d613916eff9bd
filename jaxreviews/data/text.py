"""Tokeniser and sentence splitter for raw review text (Amazon-style dumps).

Literature files (Tang et al. 2015) arrive already tokenised and bypass this module; raw text is
brought to a similar shape: lower case, punctuation split from words, one tuple of tokens per
sentence, sentence-final punctuation kept as the last token of its sentence.

Choices, so that a vocabulary built from this output stays small and stable:
  * contractions stay one token ("don't", "it's"): splitting "n't" off, as the Penn Treebank does,
    buys little for rating prediction and makes "won't" -> "wo" "n't";
  * curly apostrophes become straight ones and HTML entities ("&#34;", "&amp;") are decoded,
    because Amazon dumps contain both;
  * numbers with inner separators stay whole ("3.5", "1,000", "10:30");
  * dotted abbreviations ("e.g.", "u.s.") and a few titles ("mr.", "dr.", "vs.") are one token and
    never end a sentence;
  * runs of . ! ? are one token ("...", "?!"); any other symbol is a token on its own.

Everything is a handful of regular expressions compiled once; there is no per-character Python.
"""
from __future__ import annotations

import html
import re

# Words that end with a period without ending the sentence. Deliberately short: "no." and "etc."
# end reviews' sentences far more often than they abbreviate, so they are not here.
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "cf", "approx"})

_TOKEN = re.compile(
    r"""
      (?=\w)(?:                          # something word-like (the look-ahead saves time):
          (?:[^\W\d_]\.){2,}              #   dotted abbreviations: e.g. i.e. u.s.a.
        | (?:%s)\.                        #   titles and the like: mr. dr. vs.
        | \d+(?:[.,:]\d+)+                #   numbers with separators: 3.5 1,000 10:30
        | \w+(?:'\w+)*                    #   words, apostrophes inside: don't o'clock 2nd
      )
    | [.!?]+                              # runs of sentence punctuation: ... ?!
    | [^\w\s]                             # any other symbol on its own: , ( $
    """
    % "|".join(sorted(_ABBREVIATIONS, key=len, reverse=True)),
    re.VERBOSE,
)
# A candidate sentence end: . ! ? (a run of them), closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"""([.!?]+)["'”’)\]]*(?=\s)""")
_NEXT_CHARACTER = re.compile(r"\s*(\S?)")
_DOTTED_ABBREVIATION = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # "e.g" once the final "." is off
_OPENING_PUNCTUATION = "\"'“‘(["


def _normalise(text: str) -> str:
    if "&" in text:
        text = html.unescape(text)
    if "’" in text:
        text = text.replace("’", "'")
    return text


def tokenize(text: str) -> list[str]:
    """Lower-cased tokens of `text` (see the module docstring for what makes a token)."""
    return _TOKEN.findall(_normalise(text).lower())


def _ends_sentence(line: str, end: re.Match[str]) -> bool:
    marks = end.group(1)
    if marks == ".":
        word_start = max(line.rfind(" ", 0, end.start()), line.rfind("\t", 0, end.start())) + 1
        word = line[word_start : end.start()].lstrip(_OPENING_PUNCTUATION).lower()
        return word not in _ABBREVIATIONS and not _DOTTED_ABBREVIATION.fullmatch(word)
    if marks.startswith(".."):  # an ellipsis followed by lower case goes on: "well... maybe"
        return not _NEXT_CHARACTER.match(line, end.end()).group(1).islower()
    return True


def split_sentences(text: str) -> list[str]:
    """Sentences of raw `text`, split after runs of . ! ? and at line breaks; none empty.

    A period ends a sentence only when whitespace follows (so "3.5" and "amazon.com" stay whole)
    and the word before it is not an abbreviation ("e.g.", "Mr.").
    """
    sentences = []
    for line in text.splitlines():
        start = 0
        for end in _SENTENCE_END.finditer(line):
            if _ends_sentence(line, end):
                sentence = line[start : end.end()].strip()
                if sentence:
                    sentences.append(sentence)
                start = end.end()
        rest = line[start:].strip()
        if rest:
            sentences.append(rest)
    return sentences


def tokenize_review(text: str) -> tuple[tuple[str, ...], ...]:
    """Raw review text -> sentences of tokens, the shape a `Review` carries; no empty sentences."""
    sentences = split_sentences(_normalise(text))  # before lower-casing: case decides "... Next"
    return tuple(tokens for sentence in sentences if (tokens := tuple(_TOKEN.findall(sentence.lower()))))
