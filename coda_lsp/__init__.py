"""coda-lsp: a language server for fill-in-the-middle completion with a diffusion code model."""

__version__ = "0.1.0"
