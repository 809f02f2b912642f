"""docs/plugins.md runs as written: every code block is a file or a command, in order.

A block titled with a path (```python title="my-plugin/x.py"```) is written there; a second
block with the same title is appended after two blank lines. A ``bash`` block runs in the
same directory and must exit 0, or the code that an ``<!-- exit N -->`` comment before it
names. A ``text`` block after a ``bash`` block lists lines that its output must contain
(``...`` skips). ``pip install ./DIR`` really installs the distribution, into a target
directory on PYTHONPATH, so the plugins are visible to this test's commands only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import attrs

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
FENCE = re.compile(r'^```(\w*)(?:\s+title="([^"]+)")?\s*$')
EXIT_COMMENT = re.compile(r"^<!--\s*exit\s+(\d+)\s*-->$")
PIP_INSTALL = re.compile(r"^pip install (\./\S+)$", re.MULTILINE)


@attrs.define
class Block:
    lang: str
    title: str | None
    text: str
    exit_code: int = 0


def read_blocks(markdown: str) -> list[Block]:
    blocks, lines, i, exit_code = [], markdown.splitlines(), 0, 0
    while i < len(lines):
        comment = EXIT_COMMENT.match(lines[i].strip())
        if comment:
            exit_code = int(comment.group(1))
        fence = FENCE.match(lines[i])
        if fence:
            end = lines.index("```", i + 1)
            blocks.append(Block(fence.group(1), fence.group(2), "\n".join(lines[i + 1 : end]) + "\n", exit_code))
            exit_code, i = 0, end
        i += 1
    return blocks


def test_every_block_is_a_file_a_command_or_its_output():
    blocks = read_blocks(GUIDE.read_text())
    assert len(blocks) > 20
    for before, block in zip([None, *blocks], blocks):
        if block.lang == "text":
            assert before is not None and before.lang == "bash", f"a text block not after a command:\n{block.text}"
        elif block.lang != "bash":
            assert block.title, f"a {block.lang} block without a file name is never run:\n{block.text[:200]}"


def test_the_guide_runs(tmp_path):
    site = tmp_path / "site"  # where `pip install ./DIR` puts the plugins
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "CHARLM_DISABLE_PLUGINS"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHONPATH=str(site), PYTHONUNBUFFERED="1")
    install = f'python -m pip install --quiet --no-deps --no-build-isolation --upgrade --target "{site}" \\1'

    outputs, written = [], set()
    for block in read_blocks(GUIDE.read_text()):
        if block.title:
            path = work / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a" if block.title in written else "w") as f:
                f.write("\n\n" + block.text if block.title in written else block.text)  # two blank lines, as PEP 8
            written.add(block.title)
        elif block.lang == "bash":
            script = PIP_INSTALL.sub(install, block.text)
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=300)
            output = done.stdout + done.stderr
            assert done.returncode == block.exit_code, f"{block.text}exited {done.returncode}:\n{output[-3000:]}"
            outputs.append((block.text, output))
        elif block.lang == "text":
            command, output = outputs[-1]
            for line in block.text.splitlines():
                if line.strip() and line.strip() != "...":
                    assert line.strip() in output, f"{command}printed no line with {line.strip()!r}:\n{output[-3000:]}"

    assert (work / "runs/hybrid/checkpoints/last.pt").is_file()
    assert (work / "runs/tiny-extras/checkpoints/last.pt").is_file()
    assert (work / "hybrid.npz").is_file()
    generated = [out for command, out in outputs if "charlm generate" in command]
    assert generated and all("import " in out or "def " in out for out in generated)
    evaluated = next(out for command, out in outputs if "charlm eval" in command)
    assert "bits/byte" in evaluated or "bpb" in evaluated
