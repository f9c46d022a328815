"""Sentences for the synthetic corpus from a small grammar shipped as plain text.

The grammar file (``local/synth_text/grammar.txt``) holds rules; a rule starts with ``<name>:`` on
its own line and each indented line below it is one alternative. An alternative is a sequence of
lower-case words, references ``<name>`` (a rule, or the word list ``lists/<name>.txt`` next to the
grammar, one entry per line), groups ``( a | b )`` choosing one branch and optional parts
``[ a ]``. Every choice is uniform. ``<sentence>`` is the start rule.

A parsed alternative is a tuple of items: a word (``str``), a ``Ref`` or a ``Choice`` among
sequences (an optional part is a ``Choice`` with an empty branch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from neurosel.errors import NeuroselError

START = "sentence"
WORD = re.compile(r"^[a-z']+$")
TOKEN = re.compile(r"<[a-z_]+>|[()\[\]|]|[^\s()\[\]|<>]+|\S")


@dataclass(frozen=True)
class Ref:
    """A reference to another rule or word list by name."""

    name: str


@dataclass(frozen=True)
class Choice:
    """A uniform choice among sequences of items."""

    options: tuple[tuple["Item", ...], ...]


Item = Union[str, Ref, Choice]


@dataclass
class Grammar:
    """Rules by name, each a ``Choice`` among its alternatives; ``source`` is the grammar file."""

    rules: dict[str, Choice]
    source: Path

    def sample(self, rng: np.random.Generator) -> str:
        """One sentence from ``<sentence>``: lower-case words joined by single spaces."""
        words: list[str] = []
        self._expand(self.rules[START], rng, words)
        return " ".join(words)

    def vocabulary(self) -> set[str]:
        """Every word that some sentence can contain."""
        words: set[str] = set()
        seen: set[str] = set()
        stack = [START]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            todo: list[Item] = [self.rules[name]]
            while todo:
                item = todo.pop()
                if isinstance(item, str):
                    words.add(item)
                elif isinstance(item, Ref):
                    stack.append(item.name)
                else:
                    todo.extend(x for option in item.options for x in option)
        return words

    def _expand(self, item: Item, rng: np.random.Generator, out: list[str]) -> None:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Ref):
            self._expand(self.rules[item.name], rng, out)
        else:
            for part in item.options[int(rng.integers(len(item.options)))]:
                self._expand(part, rng, out)


def load_grammar(path: str | Path) -> Grammar:
    """Parse ``path`` and the word lists in ``lists/`` beside it into a checked ``Grammar``.

    Errors name ``file:line``: unknown references, words outside ``[a-z']``, unbalanced brackets,
    alternatives outside a rule, a missing ``<sentence>`` rule.
    """
    path = Path(path)
    if not path.is_file():
        raise NeuroselError(f"{path}: no such grammar file")
    rules: dict[str, Choice] = {}
    where: dict[str, str] = {}
    refs: list[tuple[str, str]] = []
    current: list[tuple[Item, ...]] | None = None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        loc = f"{path}:{n}"
        text = line.split("#", 1)[0].rstrip()
        if not text.strip():
            continue
        head = re.fullmatch(r"<([a-z_]+)>:", text)
        if head:
            name = head.group(1)
            if name in rules:
                raise NeuroselError(f"{loc}: rule <{name}> defined twice")
            current = []
            rules[name] = Choice(())
            where[name] = loc
            continue
        if current is None or not line[:1].isspace():
            raise NeuroselError(f"{loc}: expected '<name>:' or an indented alternative, got {text.strip()!r}")
        sequence = _parse_alternative(TOKEN.findall(text), loc, refs)
        current.append(sequence)
        rules[name] = Choice(tuple(current))
    lists_dir = path.parent / "lists"
    for name, loc in refs:
        if name not in rules:
            rules[name] = _load_word_list(lists_dir / f"{name}.txt", loc)
    for name, choice in rules.items():
        if not choice.options:
            raise NeuroselError(f"{where[name]}: rule <{name}> has no alternatives")
    if START not in rules:
        raise NeuroselError(f"{path}: no <{START}> rule")
    return Grammar(rules, path)


def draw_sentences(
    grammar: Grammar,
    count: int,
    rng: np.random.Generator,
    exclude: set[str],
    min_words: int,
    max_words: int,
) -> list[str]:
    """``count`` distinct sentences of ``min_words``..``max_words`` words not in ``exclude``.

    ``exclude`` is extended with the drawn sentences, so successive calls give disjoint sets.
    Raises ``NeuroselError`` when the grammar cannot give that many new sentences.
    """
    out: list[str] = []
    misses = 0
    patience = 2000 + 50 * count
    while len(out) < count:
        sentence = grammar.sample(rng)
        n_words = sentence.count(" ") + 1
        if min_words <= n_words <= max_words and sentence not in exclude:
            exclude.add(sentence)
            out.append(sentence)
            misses = 0
            continue
        misses += 1
        if misses > patience:
            raise NeuroselError(
                f"{grammar.source}: cannot draw {count} new sentences of {min_words}-{max_words} words "
                f"(got {len(out)}); reduce the corpus sizes or widen text.min_words/text.max_words"
            )
    return out


def _parse_alternative(tokens: list[str], loc: str, refs: list[tuple[str, str]]) -> tuple[Item, ...]:
    """Tokens of one alternative -> a sequence of items (recursive descent over brackets)."""
    pos = 0

    def sequence(closers: str) -> list[tuple[Item, ...]]:
        nonlocal pos
        branches: list[tuple[Item, ...]] = []
        items: list[Item] = []
        while pos < len(tokens) and tokens[pos] not in closers:
            tok = tokens[pos]
            pos += 1
            if tok == "|":
                branches.append(tuple(items))
                items = []
            elif tok in "([":
                closer = ")" if tok == "(" else "]"
                inner = sequence(closer)
                if pos >= len(tokens) or tokens[pos] != closer:
                    raise NeuroselError(f"{loc}: '{tok}' without a matching '{closer}'")
                pos += 1
                items.append(Choice(tuple(inner) + (((),) if tok == "[" else ())))
            elif tok.startswith("<") and tok.endswith(">") and len(tok) > 2:
                refs.append((tok[1:-1], loc))
                items.append(Ref(tok[1:-1]))
            elif WORD.match(tok):
                items.append(tok)
            else:
                raise NeuroselError(f"{loc}: {tok!r} is not a word of [a-z'] or a <reference>")
        branches.append(tuple(items))
        return branches

    branches = sequence(")]")
    if pos < len(tokens):
        raise NeuroselError(f"{loc}: unexpected '{tokens[pos]}'")
    if len(branches) != 1:
        raise NeuroselError(f"{loc}: '|' outside ( ) or [ ]; put each alternative on its own line")
    return branches[0]


def _load_word_list(path: Path, referenced_at: str) -> Choice:
    """A word list file (one entry of one or more words per line) as a ``Choice``."""
    if not path.is_file():
        raise NeuroselError(f"{referenced_at}: <{path.stem}> is neither a rule nor a word list ({path})")
    options: list[tuple[Item, ...]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        words = line.split()
        if not words:
            continue
        bad = next((w for w in words if not WORD.match(w)), None)
        if bad is not None:
            raise NeuroselError(f"{path}:{n}: {bad!r} is not a lower-case word of [a-z']")
        options.append(tuple(words))
    if not options:
        raise NeuroselError(f"{path}: empty word list")
    return Choice(tuple(options))
