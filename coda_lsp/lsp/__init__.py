"""The language server (pygls): thin handlers, strict JSON-RPC (`protocol`) and `$/progress`.

Imports `coda_lsp.core` and coda_syntax; never the HTTP server or the CLI.
"""
