"""Training data: source folders → filtered, de-duplicated files → packed token rows.

Imports coda_model (the tokenizer) and coda_syntax (node spans); nothing else of training but
`training.errors`.
"""
