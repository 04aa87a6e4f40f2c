// The Tokenizers module.
