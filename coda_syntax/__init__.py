"""coda_syntax: tree-sitter for fill-in-the-middle, byte offsets in and out.

Which language a file is (`languages`, data in the repository's `grammars/`), its tree kept in
step with edits (`syntax`), which span to regenerate and where the holes are (`spans`,
`text`), and whether a fill adds a syntax error. Imports tree-sitter only: the server and
training both build on it, so neither has to reach into the other.
"""
