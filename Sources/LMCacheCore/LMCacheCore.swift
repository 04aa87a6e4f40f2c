// The LMCacheCore module.
