"""The site's grammar as a small finite-state grammar (pocketsphinx's FSG format).

pocketsphinx can read JSGF itself, but it expands every rule reference in place and then adds
the closure of all empty transitions: for a site of five products that was 45,000 states,
318,000 transitions, 2.6 s to load and 300 MB of search structures. Here the same language is
compiled to the minimal deterministic automaton over words (subset construction, then Moore's
partition refinement), which shares every common prefix and suffix: a few thousand word
transitions and no empty ones but those into the single final state.

The expansions use the JSGF subset that grammar.py writes: words, `<rule>` references,
`( a | b )` alternatives, `[ optional ]` and sequences; rules may not refer to themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

_TOKEN: Final = re.compile(r"<[^>]+>|[()\[\]|]|[^\s()\[\]|<>]+")


class GrammarError(ValueError):
    """A rule cannot be compiled (unknown reference, recursion, unbalanced brackets)."""


@dataclass(frozen=True)
class WordAutomaton:
    """A deterministic automaton over words: `arcs[state]` maps a word to the next state."""

    arcs: tuple[Mapping[str, int], ...]
    finals: frozenset[int]
    start: int = 0

    @property
    def states(self) -> int:
        return len(self.arcs)

    @property
    def transitions(self) -> int:
        return sum(len(a) for a in self.arcs)

    def accepts(self, words: list[str] | tuple[str, ...]) -> bool:
        state = self.start
        for word in words:
            nxt = self.arcs[state].get(word)
            if nxt is None:
                return False
            state = nxt
        return state in self.finals

    def to_fsg(self, name: str = "site", final_p: float = 0.0) -> str:
        """pocketsphinx's FSG text: one extra final state reached by empty transitions, every
        state's outgoing transitions equally likely."""
        final = self.states
        lines = [f"FSG_BEGIN {name}", f"NUM_STATES {self.states + 1}", f"START_STATE {self.start}",
                 f"FINAL_STATE {final}"]
        for state, arcs in enumerate(self.arcs):
            out = len(arcs) + (1 if state in self.finals else 0)
            if not out:
                continue
            p = 1.0 / out
            end_p = p
            if state in self.finals and final_p and arcs:
                end_p, p = final_p, (1.0 - final_p) / len(arcs)
            for word, target in sorted(arcs.items()):
                lines.append(f"TRANSITION {state} {target} {p:.6g} {word}")
            if state in self.finals:
                lines.append(f"TRANSITION {state} {final} {end_p:.6g}")
        lines.append("FSG_END")
        return "\n".join(lines) + "\n"


def compile_rules(rules: Mapping[str, str], top: str) -> WordAutomaton:
    """The minimal automaton of `top` (an expansion) with `rules` (name → expansion)."""
    nfa = _Nfa()
    start = nfa.state()
    end = _Builder(nfa, rules).expansion(top, start, ())
    return _minimise(_determinise(nfa, start, end))


# ---------------------------------------------------------------------------- NFA


class _Nfa:
    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.arcs: list[list[tuple[str, int]]] = []

    def state(self) -> int:
        self.eps.append([])
        self.arcs.append([])
        return len(self.eps) - 1


class _Builder:
    """Thompson construction; a referenced rule is compiled once to its own minimal automaton,
    and each reference embeds a copy of that (a number rule of 120 values is ~20 states, not
    the ~250 of its expansion)."""

    def __init__(self, nfa: _Nfa, rules: Mapping[str, str], compiled: dict[str, WordAutomaton] | None = None) -> None:
        self.nfa = nfa
        self.rules = rules
        self.compiled: dict[str, WordAutomaton] = {} if compiled is None else compiled

    def reference(self, name: str, current: int, stack: tuple[str, ...]) -> int:
        if name in stack:
            raise GrammarError(f"rule <{name}> refers to itself")
        if name not in self.rules:
            raise GrammarError(f"unknown rule <{name}>")
        dfa = self.compiled.get(name)
        if dfa is None:
            sub = _Nfa()
            start = sub.state()
            end = _Builder(sub, self.rules, self.compiled).expansion(self.rules[name], start, (*stack, name))
            dfa = self.compiled[name] = _minimise(_determinise(sub, start, end))
        nfa = self.nfa
        states = [nfa.state() for _ in range(dfa.states)]
        end = nfa.state()
        nfa.eps[current].append(states[dfa.start])
        for state, arcs in enumerate(dfa.arcs):
            nfa.arcs[states[state]].extend((word, states[target]) for word, target in arcs.items())
            if state in dfa.finals:
                nfa.eps[states[state]].append(end)
        return end

    def expansion(self, text: str, start: int, stack: tuple[str, ...]) -> int:
        tokens = _TOKEN.findall(text)
        end, pos = self._alternatives(tokens, 0, start, stack)
        if pos != len(tokens):
            raise GrammarError(f"unexpected {tokens[pos]!r} in {text[:80]!r}")
        return end

    def _alternatives(self, tokens: list[str], pos: int, start: int, stack: tuple[str, ...]) -> tuple[int, int]:
        ends: list[int] = []
        while True:
            end, pos = self._sequence(tokens, pos, start, stack)
            ends.append(end)
            if pos < len(tokens) and tokens[pos] == "|":
                pos += 1
                continue
            break
        if len(ends) == 1:
            return ends[0], pos
        joined = self.nfa.state()
        for end in ends:
            self.nfa.eps[end].append(joined)
        return joined, pos

    def _sequence(self, tokens: list[str], pos: int, start: int, stack: tuple[str, ...]) -> tuple[int, int]:
        current = start
        while pos < len(tokens) and tokens[pos] not in ("|", ")", "]"):
            token = tokens[pos]
            if token in ("(", "["):
                close = ")" if token == "(" else "]"
                inner = self.nfa.state()
                self.nfa.eps[current].append(inner)
                end, pos = self._alternatives(tokens, pos + 1, inner, stack)
                if pos >= len(tokens) or tokens[pos] != close:
                    raise GrammarError(f"missing {close!r}")
                pos += 1
                if token == "[":
                    self.nfa.eps[current].append(end)
                current = end
            elif token.startswith("<"):
                current = self.reference(token[1:-1], current, stack)
                pos += 1
            else:
                nxt = self.nfa.state()
                self.nfa.arcs[current].append((token, nxt))
                current = nxt
                pos += 1
        return current, pos


# ---------------------------------------------------------------------------- DFA


def _closure(nfa: _Nfa, states: frozenset[int]) -> frozenset[int]:
    seen = set(states)
    todo = list(states)
    while todo:
        for nxt in nfa.eps[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return frozenset(seen)


def _determinise(nfa: _Nfa, start: int, end: int) -> WordAutomaton:
    first = _closure(nfa, frozenset({start}))
    index: dict[frozenset[int], int] = {first: 0}
    order = [first]
    arcs: list[dict[str, int]] = []
    finals: set[int] = set()
    i = 0
    while i < len(order):
        current = order[i]
        if end in current:
            finals.add(i)
        moves: dict[str, set[int]] = {}
        for state in current:
            for word, target in nfa.arcs[state]:
                moves.setdefault(word, set()).add(target)
        out: dict[str, int] = {}
        for word, targets in moves.items():
            nxt = _closure(nfa, frozenset(targets))
            number = index.get(nxt)
            if number is None:
                number = index[nxt] = len(order)
                order.append(nxt)
            out[word] = number
        arcs.append(out)
        i += 1
    return WordAutomaton(tuple(arcs), frozenset(finals))


def _minimise(dfa: WordAutomaton) -> WordAutomaton:
    """Moore's partition refinement: states with the same future are merged."""
    block = [1 if s in dfa.finals else 0 for s in range(dfa.states)]
    count = len(set(block))
    while True:
        signatures: dict[tuple[object, ...], int] = {}
        refined: list[int] = []
        for state, arcs in enumerate(dfa.arcs):
            signature = (block[state], tuple(sorted((w, block[t]) for w, t in arcs.items())))
            refined.append(signatures.setdefault(signature, len(signatures)))
        if len(signatures) == count:
            break
        block, count = refined, len(signatures)
    # Renumber so the start state is 0 and states appear in breadth-first order.
    order = {block[dfa.start]: 0}
    queue = [dfa.start]
    representative = {block[dfa.start]: dfa.start}
    while queue:
        state = queue.pop(0)
        for _word, target in sorted(dfa.arcs[state].items()):
            b = block[target]
            if b not in order:
                order[b] = len(order)
                representative[b] = target
                queue.append(target)
    merged: list[dict[str, int]] = [{} for _ in order]
    for b, number in order.items():
        merged[number] = {w: order[block[t]] for w, t in dfa.arcs[representative[b]].items()}
    finals = frozenset(order[block[s]] for s in dfa.finals)
    return WordAutomaton(tuple(merged), finals)
