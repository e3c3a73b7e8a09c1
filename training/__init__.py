"""Training for CoDA-architecture models: span-masked diffusion pre-training and fine-tuning.

By stage, bottom to top: `data` (corpus, packing, held-out files, decontamination, tokenizer),
`objective` (span masks and the diffusion loss), `run` (the training loop and its backends,
recipes, growth, checkpoints), `eval` (scoring fills, probes, the AR baseline). The commands
users run are this folder's own modules, `python -m training.<command>`: `finetune`,
`gpu_run` and `ship` orchestrate several stages; the others forward to the stage that holds
them. May import coda_model and coda_syntax, never coda_lsp.
"""
