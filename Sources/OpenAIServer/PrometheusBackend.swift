internal import CoreMetrics
internal import Prometheus
internal import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// The process's swift-metrics backend: a Prometheus registry that `GET /metrics` shows after the
/// server's own metrics. The tiers, the `lm://` and P2P servers and the peers count through
/// swift-metrics (`Counter(label: "lmcache.storage.hits")`, …); without a backend those figures go
/// nowhere, so a program that serves calls ``bootstrap()`` first, before it builds any of them.
/// Labels become metric names with `_` for `.` (`lmcache_storage_hits{tier="cpu"}`).
///
/// ```swift
/// PrometheusBackend.bootstrap()   // at the start of `lmcache serve`
/// ```
public enum PrometheusBackend {
    private static let shared = Mutex<PrometheusCollectorRegistry?>(nil)

    /// Makes a Prometheus registry the swift-metrics backend of this process. Only the first call does
    /// anything (swift-metrics takes one backend per process).
    public static func bootstrap() {
        shared.withLock { registry in
            guard registry == nil else { return }
            let created = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: created))
            registry = created
        }
    }

    /// The registry, once ``bootstrap()`` made it the backend.
    static var registry: PrometheusCollectorRegistry? { shared.withLock { $0 } }
}
