"""`python -m training.tokenizer_train`: the command, in `training.data.tokenizer_train`."""

from training.data.tokenizer_train import main

if __name__ == "__main__":
    main()
