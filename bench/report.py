"""Write a benchmark's results into its own section of BENCHMARKS.md, so figures always come from a run."""
from __future__ import annotations

import argparse
import platform
import re
from pathlib import Path

import torch


def machine_description(device: torch.device) -> str:
    """One line naming the processor or GPU, the thread count and the torch build."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        model = ""
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.exists():
            match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
            model = match.group(1).strip() if match else ""
        hardware = f"{model or platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{hardware}; torch {torch.__version__}; Python {platform.python_version()}"


def update_section(path: str | Path, name: str, body: str) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (append if absent)."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + f"\n\n{block}\n"
    path.write_text(text)


def command_line() -> str:
    """This run's command, as it would be typed from the project root."""
    import shlex
    import sys

    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def publish(section: str, lines: list[str], write: str | None) -> None:
    """Print a result block (its lines, then the command that made it) and, when ``write``
    names a file, put it in that file's section."""
    text = "\n".join([*lines, "", f"Command: `{command_line()}`"])
    print(text)
    if write:
        update_section(write, section, text)


def device_script_arguments(doc: str, quick: str) -> argparse.Namespace:
    """The arguments of the scripts gpu.sh runs: ``--quick`` (what it swaps in: ``quick``),
    ``--device`` and ``--write``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--write", metavar="BENCHMARKS.md")
    return parser.parse_args()
