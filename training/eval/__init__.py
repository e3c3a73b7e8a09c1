"""Scoring fills: held-out spans and HumanEval-Infilling (`evaluate`), whole repositories
(`repo`), the probe, the execution sandbox, reports and the autoregressive baseline. Imports
the stages below it (`data`, `objective`, `run`)."""
