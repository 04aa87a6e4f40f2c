// The GGUF module.
