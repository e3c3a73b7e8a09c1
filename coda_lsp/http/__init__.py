"""The HTTP server (Starlette on uvicorn): llama.cpp `/infill` and OpenAI completions.

`wire` turns each client's request shape into one fill request and the answer back into its
shape; `server` holds the thin handlers. Imports `coda_lsp.core`; never the language server.
"""
