// The Kernels module.
