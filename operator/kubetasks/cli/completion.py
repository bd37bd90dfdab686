"""Shell completion without a dependency: ``kubetasks completion bash|zsh`` prints a script
that asks the command itself (``kubetasks __complete WORD...``) for the candidates, which
are read from the argparse parser: subcommands, flags and flag choices, so completion
never lags behind the commands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

BASH = """\
# kubetasks bash completion: eval "$(kubetasks completion bash)"
_kubetasks_complete() {
    local IFS=$'\\n'
    COMPREPLY=($(kubetasks __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _kubetasks_complete kubetasks
"""

ZSH = """\
#compdef kubetasks
# kubetasks zsh completion: eval "$(kubetasks completion zsh)"
_kubetasks() {
    local -a candidates
    candidates=("${(@f)$(kubetasks __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    compadd -a candidates
}
compdef _kubetasks kubetasks
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def candidates(parser: argparse.ArgumentParser, words: Sequence[str]) -> list[str]:
    """What may come in place of the last of ``words`` (the words after ``kubetasks``; the
    last is the one being typed, possibly empty)."""
    *done, current = list(words) or [""]
    node = parser
    expecting: argparse.Action | None = None
    for word in done:
        if expecting is not None:
            expecting = None
            continue
        options = {o: a for a in node._actions for o in a.option_strings}
        if word in options:
            action = options[word]
            expecting = action if action.nargs != 0 else None
            continue
        sub = _subparsers(node).get(word)
        if sub is not None:
            node = sub
    if expecting is not None:
        return [str(c) for c in expecting.choices or () if str(c).startswith(current)]
    if current.startswith("-"):
        flags = [o for a in node._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
        return sorted(f for f in flags if f.startswith(current))
    return sorted(n for n in _subparsers(node) if n.startswith(current) and not n.startswith("_"))
