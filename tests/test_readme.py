"""The README and the docs pages cannot drift from the code (issue 25).

Every fenced shell block of README.md, CONTRIBUTING.md and docs/*.md (and every ``!command`` line of their
Python blocks, the notebook form) is checked statically: each command names an existing ``tcl-lite``
subcommand with options its parser accepts, an existing preset, config keys that exist, a script that
exists, a make target of the Makefile. A block preceded by the line ``<!-- doctest -->`` is also *run*,
command by command, in one temporary folder shared by all the pages in order (README.md first, so its
``runs/default`` is there for the pages after it), with the checkout on PYTHONPATH, ``tcl-lite`` on PATH
and the tiny settings of ``conftest.TINY`` appended to each training command (keys the command sets itself
are kept). ``<!-- doctest expect="TEXT" -->`` also requires TEXT in the block's output. Commands that need a
GPU, the network or CIFAR stay unmarked (the page says so). CONTRIBUTING.md describes the markers."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_env

from tcl_lite.cli import COMMANDS
from tcl_lite.cli.dispatch import BROKEN_PIPE
from tcl_lite.cli.launch import split as launch_split
from tcl_lite.cli.train import parse_train_args
from tcl_lite.config import key_fields
from tcl_lite.presets import available_presets

PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!-- doctest((?:\s+expect=\"[^\"]*\")*)\s*-->$")
SHELL = {"bash", "sh", "shell", "console"}
# Pages other branches of this wave write; links to them may dangle until they are merged.
PENDING_PAGES: set[str] = set()  # pages other branches were writing (all merged now)
# First words a shell block may use besides the ones checked below (tcl-lite, python, accelerate, make).
PLAIN_TOOLS = {"pip", "head", "tensorboard", "git", "cd", "export", "ls", "cat", "lint-imports", "nvidia-smi"}
OVERRIDE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)+=")
TRAINING = re.compile(r"^(python (-m tcl_lite (train|audit)\b|\S*train\.py)|tcl-lite (train|audit)\b)")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence
    heading: str
    lang: str
    body: list[tuple[int, str]] = field(default_factory=list)
    run: bool = False
    expect: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line} (section '{self.heading}')"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, each with its heading and doctest marker."""
    out: list[Block] = []
    heading, previous, current = "(top)", "", None
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if current is not None:
            if line.startswith("```"):
                out.append(current)
                current = None
            else:
                current.body.append((n, line))
        elif line.startswith("```"):
            mark = MARK.match(previous.strip())
            current = Block(page, n, heading, line[3:].strip().split(" ")[0], run=bool(mark),
                            expect=re.findall(r'expect="([^"]*)"', mark.group(1)) if mark else [])
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip():
            previous = line
    return out


def commands(block: Block) -> list[tuple[int, str]]:
    """``(line, command)``: continuation lines joined, comments and prompts dropped; of a Python block only
    its ``!shell`` lines."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for n, line in block.body:
        if block.lang not in SHELL:  # a notebook cell: only `!command` lines (and their continuations)
            if not pending and not line.startswith("!"):
                continue
            line = line.removeprefix("!")
        text = line.strip()
        if not pending:
            start = n
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        command = _strip_comment(pending + text)
        pending = ""
        if command:
            out.append((start, command))
    return out


def _strip_comment(text: str) -> str:
    """``text`` up to its first ``#`` that starts a word outside quotes (a shell comment)."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip()
    return text.strip()


# ---------------------------------------------------------------- the static check


def _parse(parser: argparse.ArgumentParser, argv: list[str], intermixed: bool) -> str:
    """'' when ``argv`` parses, else argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            (parser.parse_intermixed_args if intermixed else parser.parse_args)(argv)
    except SystemExit as e:
        return err.getvalue().strip().splitlines()[-1] if e.code else ""
    return ""


def _config_problems(argv: list[str]) -> list[str]:
    problems = []
    keys = key_fields()
    for i, token in enumerate(argv):
        if OVERRIDE.match(token) and token.split("=")[0] not in keys:
            problems.append(f"no config key {token.split('=')[0]!r}")
        if token == "--config" and i + 1 < len(argv):
            name = argv[i + 1]
            if "/" not in name or name.startswith("configs/"):
                if Path(name).stem not in available_presets():
                    problems.append(f"no preset {name!r}")
    return problems


def check_tcl_lite(argv: list[str]) -> list[str]:
    """Problems of ``tcl-lite ARGV`` (subcommand, options, presets, keys), without running it."""
    if not argv or argv[0] in ("--help", "-h"):
        return []
    sub, rest = argv[0], argv[1:]
    if sub not in COMMANDS:
        return [f"no tcl-lite command {sub!r} (there are {', '.join(COMMANDS)})"]
    if sub == "launch":
        return check_tcl_lite(["train", *launch_split(rest)[1]])
    if sub == "train":
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parse_train_args(rest)
        except SystemExit as e:
            if e.code:
                return [f"tcl-lite train: {err.getvalue().strip().splitlines()[-1]}"]
        return _config_problems(rest)
    complaint = _parse(COMMANDS[sub].parser(), rest, intermixed=sub in ("audit", "plan"))
    return ([f"tcl-lite {sub}: {complaint}"] if complaint else []) + _config_problems(rest)


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z0-9_-]*):", text, flags=re.M))


def check_command(command: str) -> list[str]:
    """Problems of one shell command line (each part of a pipe or && chain)."""
    try:
        tokens = shlex.split(command)
    except ValueError as e:
        return [f"cannot be split as shell words: {e}"]
    problems, part = [], []
    for token in [*tokens, "|"]:
        if token not in ("|", "&&", ";", "||"):
            part.append(token)
            continue
        while part and re.match(r"^[A-Z_][A-Z0-9_]*=", part[0]):  # VAR=value prefixes
            part.pop(0)
        problems += _check_words(part) if part else []
        part = []
    return problems


def _check_words(words: list[str]) -> list[str]:
    first, rest = words[0], words[1:]
    if first == "tcl-lite":
        return check_tcl_lite(rest)
    if first == "python":
        if rest[:2] == ["-m", "tcl_lite"]:
            return check_tcl_lite(rest[2:])
        if rest[:1] in (["-m"], ["-c"]):
            return []
        script = rest[0] if rest else ""
        if not (ROOT / script).is_file():
            return [f"no script {script!r} in the checkout"]
        return check_tcl_lite(["train", *rest[1:]]) if script == "train.py" else []
    if first == "accelerate":
        if "train.py" in rest:
            return check_tcl_lite(["train", *rest[rest.index("train.py") + 1:]])
        if "tcl_lite" in rest:
            return check_tcl_lite(rest[rest.index("tcl_lite") + 1:])
        return []
    if first == "make":
        missing = [w for w in rest if "=" not in w and w not in make_targets()]
        return [f"no make target {w!r}" for w in missing]
    if first.startswith("bench/") and first.endswith(".sh"):
        return [] if (ROOT / first).is_file() else [f"no script {first!r}"]
    if first in PLAIN_TOOLS:
        return []
    return [f"the doc test does not know the command {first!r}: name a tcl-lite command, a script or a "
            "make target, or add the tool to PLAIN_TOOLS in tests/test_readme.py"]


def test_every_shell_command_names_what_exists():
    problems, checked = [], 0
    for page in PAGES:
        if not page.exists():
            continue
        for block in blocks(page):
            for line, command in commands(block):
                checked += 1
                problems += [f"{block.page.relative_to(ROOT)}:{line}: `{command}`: {p}" for p in check_command(command)]
    assert checked > 20, "the pages lost their commands?"
    assert not problems, "\n".join(problems)


def test_a_reader_that_stops_early_ends_a_command_quietly(tmp_path):
    """`tcl-lite config-docs | head -5` (docs/config.md): the reader's exit is no traceback, exit status 141."""
    done = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m tcl_lite config-docs | true; "
                           "echo ${PIPESTATUS[0]} >&2"], cwd=tmp_path, env=run_env(), capture_output=True, text=True)
    assert done.stderr.strip() in (str(BROKEN_PIPE), "0"), done.stderr  # 0: all was written before `true` ended


def test_the_static_check_catches_drift():
    assert check_command("tcl-lite trian --config digits_ce")[0].startswith("no tcl-lite command 'trian'")
    assert check_command("python train.py --config digits_cee") == ["no preset 'digits_cee'"]
    assert check_command("tcl-lite plan --config cifar10_ce train.epoch=3 --gpu t4") == [
        "no config key 'train.epoch'"]
    assert "unrecognized arguments: --frobnicate" in check_command("tcl-lite report runs/a --frobnicate")[0]
    assert check_command("make tests") == ["no make target 'tests'"]
    assert check_command("ACCELERATE_USE_CPU=1 tcl-lite launch --multi_gpu -- --config digits_ce") == []
    assert check_command("python -m tcl_lite config-docs | head -5") == []
    assert "does not know the command 'rm'" in check_command("rm -rf runs")[0]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_pages_resolve():
    problems = []
    for page in PAGES:
        if not page.exists():
            continue
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # a URL
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            rel = os.path.relpath(dest, ROOT)
            if not dest.exists():
                if rel not in PENDING_PAGES:
                    problems.append(f"{page.relative_to(ROOT)}: link to missing {target}")
                continue
            if anchor and dest.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), flags=re.M)}
                if anchor not in slugs:
                    problems.append(f"{page.relative_to(ROOT)}: no heading for #{anchor} in {rel}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- running the marked blocks


def _tiny(command: str) -> str:
    """``command`` with ``python train.py`` pointing into the checkout and, for a training command, the tiny
    settings it does not set itself appended."""
    command = re.sub(r"(?<=python )train\.py\b", shlex.quote(str(ROOT / "train.py")), command)
    if TRAINING.match(command) and "|" not in command:
        own = {w.split("=")[0] for w in shlex.split(command) if OVERRIDE.match(w)}
        command += "".join(f" {kv}" for kv in TINY if kv.split("=")[0] not in own)
    return command


def _image_folder(root: Path) -> None:
    """``my_folder/<class>/*.png``: 20 digits of each of three classes (the README's audit example)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in (0, 1, 7):
        folder = root / "my_folder" / f"class_{label}"
        folder.mkdir(parents=True)
        for i, image in enumerate(digits.images[digits.target == label][:20]):
            Image.fromarray((image * 16).clip(0, 255).astype("uint8")).resize((16, 16)).save(folder / f"{i}.png")


def marked_blocks() -> list[Block]:
    return [b for page in PAGES if page.exists() for b in blocks(page) if b.run]


def test_marked_blocks_run(tmp_path):
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "tcl-lite").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tcl_lite "$@"\n')
    (shims / "tcl-lite").chmod(0o755)
    (shims / "python").symlink_to(sys.executable)
    work = tmp_path / "work"
    work.mkdir()
    _image_folder(work)
    env = dict(run_env(), PATH=f"{shims}{os.pathsep}{os.environ['PATH']}", MPLBACKEND="Agg")
    ran = []
    for block in marked_blocks():
        assert block.lang in SHELL, f"{block.where()}: only shell blocks can be marked runnable"
        output = ""
        for line, command in commands(block):
            shell, start = _tiny(command), time.perf_counter()
            done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=600)
            output += done.stdout + done.stderr
            print(f"{block.where()}: {command}: {time.perf_counter() - start:.1f} s")
            if done.returncode and not (done.returncode == BROKEN_PIPE and "|" in command):  # `... | head`
                pytest.fail(f"{block.where()}, line {line}: `{command}` exited {done.returncode} (ran as: {shell})\n"
                            + (done.stdout + done.stderr)[-3000:])
            ran.append(command)
        for text in block.expect:
            assert text in output, f"{block.where()}: the output lacks {text!r}, which the page promises"
    assert len(ran) >= 5, ran
