"""Writing a benchmark's generated table into a Markdown file, between two marker comments."""

from pathlib import Path


def write_block(path: Path, generated: str, begin: str, end: str) -> None:
    """Replace the block of `path` between `begin` and `end` by `generated`, or append one."""
    block = f"{begin}\n{generated}\n{end}"
    text = path.read_text() if path.exists() else "# Performance\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
