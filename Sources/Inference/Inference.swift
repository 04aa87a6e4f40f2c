// The Inference module.
