// The LMCacheStorage module.
