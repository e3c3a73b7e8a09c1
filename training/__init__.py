"""Training for CoDA-architecture models: span-masked diffusion pre-training and fine-tuning."""
