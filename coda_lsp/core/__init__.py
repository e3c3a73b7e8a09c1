"""The completion core every front end shares: documents and positions, the prompt, the
engine (model, sampler, ranking), the fill contract (`fim`), scheduling, settings and logs.

May import coda_model, coda_syntax and lsprotocol's types; never pygls' server, Starlette or
the front ends (`coda_lsp.lsp`, `coda_lsp.http`, `coda_lsp.cli`).
"""
