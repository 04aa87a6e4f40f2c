#if LMCACHE_TSAN
import LMCacheCore

/// In a thread-sanitizer build, `Mutex` here is one the sanitizer sees (see ``SanitizedMutex``).
typealias Mutex<Value: ~Copyable> = SanitizedMutex<Value>
#endif
