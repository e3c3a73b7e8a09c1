"""The masked-diffusion objective: span masks over packed rows and the loss (`masks`), and
its batched form for accelerators (`batched`). Pure tensors: imports torch only."""
