"""Which grammar checks an HTTP fill: the one the request names, else the one its text parses
cleanly in (``coda_syntax.detect``), else none.

``coda-lsp fill`` knows the file, so its candidates are ranked by whether they parse; an HTTP
request carries only text around the cursor. Without a grammar the two rank differently and
answer differently for the same hole. The language is handed to the fill as the document's
name (``untitled:fim.py``): the fill opens documents by name, as ``coda-lsp fill`` does.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from coda_syntax.detect import detect
from coda_syntax.languages import resolve

NO_GRAMMAR = "untitled:fim"


def document_uri(prefix: str, suffix: str, language: str | None = None,
                 filename: str | None = None) -> tuple[str, str]:
    """(the fill's document name, how its language was found: language, filename, detected
    or none). A named language or file this server has no grammar for means no grammar, not
    a guess: ``"language": "plaintext"`` turns detection off."""
    if language:
        lang = resolve(language_id=language)
        return (_uri(lang.extensions[0]), "language") if lang else (NO_GRAMMAR, "none")
    if filename:
        name = PureWindowsPath(PurePosixPath(filename).name).name  # never a path: a name
        lang = resolve(uri=name)
        return (f"untitled:{name}", "filename") if lang else (NO_GRAMMAR, "none")
    lang = detect(prefix, suffix)
    return (_uri(lang.extensions[0]), "detected") if lang else (NO_GRAMMAR, "none")


def _uri(extension: str) -> str:
    return f"{NO_GRAMMAR}.{extension}"
