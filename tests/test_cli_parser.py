"""Every ``edge-affect`` subcommand's parser, walked: each option has help text, shared concepts have one name
across commands (the old spellings parse, hidden, for one release), and help texts name only options that exist."""

from __future__ import annotations

import argparse
import re

import pytest

from edge_affect.cli import build_parser

#: One concept, one spelling: the name every command uses, and the spellings it replaced (hidden aliases).
VOCABULARY: dict[str, tuple[str, tuple[str, ...]]] = {
    "frames the parity gates judge": ("--eval-data", ("--ferplus",)),
    "split of the evaluation data": ("--eval-split", ()),
    "how many gate frames are judged": ("--parity-frames", ("--limit",)),
    "timed calls per measurement": ("--iters", ("--bench-iters",)),
    "skip TensorRT engines": ("--no-engine", ("--no-engines",)),
}
#: Commands with ``--data``: always a dataset root (ABAW layout), never frames to judge.
DATA_IS_A_DATASET_ROOT = {"train", "eval", "export", "package", "distill teach"}
#: The old spellings, where they were, and what they now set.
ALIASES = [
    (["parity", "d", "--data", "x.npz"], "data", "x.npz"),
    (["parity", "d", "--split", "train"], "split", "train"),
    (["parity", "d", "--limit", "5"], "limit", 5),
    (["parity", "d", "--no-engines"], "no_engines", True),
    (["demo", "--bench-iters", "3"], "bench_iters", 3),
    (["demo", "--ferplus", "f.npz"], "ferplus", "f.npz"),
]


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command by its full name ("calib build", "serve", ...)."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[name] = parser
        for s in subs:
            for child, sp in s.choices.items():
                walk(f"{name} {child}".strip(), sp)

    walk("", build_parser())
    return out


COMMANDS = _commands()


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))
        and a.help is not argparse.SUPPRESS
    ]


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in _visible(parser) for s in a.option_strings}


def test_every_command_is_walked():
    expected = {"train", "eval", "export", "package", "build-engine", "calib build", "calib verify", "parity"}
    expected |= {"data synth", "data check", "data import", "run", "bench", "demo"}
    assert expected <= set(COMMANDS)
    if any(name.startswith("serve") for name in COMMANDS):  # issue 23's command, once present
        assert "serve" in COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help(name):
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in _visible(COMMANDS[name]) if not a.help]
    assert not missing, f"edge-affect {name}: no help text for {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_only_options_that_exist(name):
    """A help text that points to an option (``see --list-models``) points to a real one of some command."""
    everywhere = set().union(*(_flags(p) for p in COMMANDS.values()))
    texts = [COMMANDS[name].description or ""] + [a.help or "" for a in _visible(COMMANDS[name])]
    named = {m for t in texts for m in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", t)}
    assert named <= everywhere, f"edge-affect {name}: help names {sorted(named - everywhere)}"


def test_shared_concepts_use_the_shared_names():
    visible = {name: _flags(p) for name, p in COMMANDS.items()}
    for concept, (name, old) in VOCABULARY.items():
        assert any(name in f for f in visible.values()), f"{concept}: no command has {name}"
        for spelling in old:
            holders = [c for c, f in visible.items() if spelling in f]
            assert not holders, f"{concept} is {name}; {holders} still show {spelling}"
    data = {c for c, f in visible.items() if "--data" in f}
    assert data == DATA_IS_A_DATASET_ROOT, f"--data shown by {sorted(data)}"
    for c in data:
        (a,) = [a for a in _visible(COMMANDS[c]) if "--data" in a.option_strings]
        assert "dataset root" in a.help, f"edge-affect {c} --data: {a.help!r}"


#: Positionals still spelled the old way, with why: eval's ``ckpt`` is named in tests/reliability's expected errors
#: ("the file given as CKPT"); rename it with them.
OLD_POSITIONALS = {("eval", "ckpt")}


def test_checkpoint_positionals_have_one_name():
    for name, p in COMMANDS.items():
        for a in _visible(p):
            if not a.option_strings and a.dest in ("ckpt", "checkpoint") and (name, a.dest) not in OLD_POSITIONALS:
                assert (a.metavar or a.dest).lower() == "checkpoint", f"edge-affect {name}: positional {a.dest!r}"


@pytest.mark.parametrize(("argv", "dest", "value"), ALIASES)
def test_old_spellings_still_parse(argv, dest, value):
    args = build_parser().parse_args(argv)
    got = getattr(args, dest)
    assert (str(got) if isinstance(value, str) else got) == value


def test_list_models_is_real(capsys):
    from edge_affect.models.registry import list_models

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", "--list-models"])  # before --data is required
    assert e.value.code == 0
    assert capsys.readouterr().out.split() == list_models() and "edge_gray48_slim" in list_models()


def test_data_help_lists_every_subcommand():
    parser = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["data"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    top = next(a for a in build_parser()._subparsers._group_actions[0]._choices_actions if a.dest == "data")
    for name in sub.choices:
        assert name in (sub.metavar or "") and name in top.help, name


def _readme_commands() -> list[str]:
    """Every ``edge-affect ...`` line of the README's bash blocks (continuations joined, comments dropped)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].split("  #")[0].strip()
            if line.startswith("edge-affect "):
                cmds.append(line)
    return cmds


@pytest.mark.parametrize("line", _readme_commands())
def test_readme_commands_parse(line):
    """The README's commands use options that exist, spelt as the parser spells them (a stale flag fails here)."""
    import shlex

    argv = shlex.split(line.replace("$S", "edge_affect/assets/samples"))[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --list-models prints and exits 0; a parse error exits 2
        assert e.code == 0, line
        return
    assert callable(getattr(args, "func", None)), line
