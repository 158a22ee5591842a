"""The one line of an error text that says what went wrong (console lines, tables, the leaderboard)."""

from __future__ import annotations

_DIRECT_CAUSE = "The above exception was the direct cause of the following exception:"
_DURING_HANDLING = "During handling of the above exception, another exception occurred:"
_NOT_A_MESSAGE = ("None", "")
NO_MESSAGE = "(no error message recorded)"


def _exception_header(segment: list[str]) -> str | None:
    """The exception line of one traceback block: the first unindented line after its frames."""
    in_frames = False
    for line in segment:
        if line.startswith("Traceback"):
            in_frames = True
            continue
        if in_frames and line[:1].isspace():
            continue
        if in_frames and line.strip() and line.strip() not in _NOT_A_MESSAGE:
            return line.strip()
    return None


def error_line(error: str | None) -> str:
    """The line that names the real exception of a traceback, else the error's first line.

    In a chain ``raise Wrapper(...) from cause`` (what torch does around errors raised
    inside compiled code) the *cause* is the real one, so the chain is followed back
    through "direct cause" links; a line that says nothing (``None``) is never chosen.
    """
    lines = [line for line in (error or "").strip().splitlines()]
    text_lines = [line for line in lines if line.strip()]
    if not text_lines:
        return NO_MESSAGE
    if not text_lines[0].startswith("Traceback"):
        return text_lines[0].strip()
    segments: list[list[str]] = [[]]
    links: list[str] = []   # links[i]: how segment i+1 relates to segment i
    for line in lines:
        if line.strip() in (_DIRECT_CAUSE, _DURING_HANDLING):
            links.append("cause" if line.strip() == _DIRECT_CAUSE else "context")
            segments.append([])
        else:
            segments[-1].append(line)
    chosen = len(segments) - 1
    while chosen > 0 and links[chosen - 1] == "cause":
        chosen -= 1
    for index in [chosen] + [i for i in range(len(segments) - 1, -1, -1) if i != chosen]:
        header = _exception_header(segments[index])
        if header:
            return header
    meaningful = [line.strip() for line in text_lines if line.strip() not in _NOT_A_MESSAGE]
    return meaningful[-1] if meaningful else text_lines[-1].strip()


def exception_line(err: BaseException) -> str:
    """``Type: first line of the message`` of an exception object (a Ray or process failure)."""
    text = error_line(str(err))
    return type(err).__name__ if text == NO_MESSAGE else f"{type(err).__name__}: {text}"


__all__ = ["error_line", "exception_line"]
