"""Running training: the loop and its backends (torch, torch_xla), devices, recipes, model
growth, checkpoints and resumable state, metrics. Imports `training.data` and
`training.objective`, never `training.eval`."""
