"""coda-lsp: a language server for fill-in-the-middle completion with a diffusion code model.

Rooms, bottom to top: `core` (one completion from text to ranked fills; imports coda_model and
coda_syntax), then the front ends beside each other, `lsp` (pygls), `http` (Starlette) and
`cli`, which import `core` and never each other (the CLI starts either server).
"""

__version__ = "0.1.0"
