internal import Inference
internal import LMCacheStorage
internal import Prometheus
internal import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// The server's metrics for `GET /metrics`, in a Prometheus registry of the server's own.
///
/// The page holds this registry's metrics, then those of the process's swift-metrics backend when it
/// is this package's (``PrometheusBackend/bootstrap()``: the counters the tiers, servers and peers keep).
/// The request counters and the time-to-first-token histogram are updated as requests run; the
/// engine's and the tiers' figures (their ``StorageManager/Statistics``) are copied in when the page
/// is rendered. LMCache's own names (`lmcache:num_hit_tokens`, …) stand beside ours, so that
/// dashboards made for LMCache read the same figures.
final class ServerMetrics: Sendable {
    /// Upper bounds of the time-to-first-token buckets, seconds.
    static let ttftBuckets: [Double] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    let registry = PrometheusCollectorRegistry()

    /// What the page copies in: generations running or queued, and the token tallies.
    private struct State {
        var running = 0
        var promptTokensComputed = 0
        var promptTokensLoaded = 0
        var generatedTokens = 0
        var generations = 0
    }

    private let state = Mutex(State())
    private let ttft: ValueHistogram
    private let disconnects: Counter
    private let timeouts: Counter

    init() {
        ttft = registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(metricName: "lmcache_time_to_first_token_seconds", unitName: "", helpText: "Time from request to first generated token."),
            buckets: Self.ttftBuckets
        )
        disconnects = registry.makeCounter(
            descriptor: MetricNameDescriptor(metricName: "lmcache_client_disconnects_total",
                unitName: "", helpText: "Generations, streamed or not, stopped because the client went away."))
        timeouts = registry.makeCounter(
            descriptor: MetricNameDescriptor(metricName: "lmcache_request_timeouts_total",
                unitName: "", helpText: "Requests cancelled because they ran past the request timeout."))
    }

    /// Counts a finished request to `endpoint` with HTTP `status`.
    func countRequest(endpoint: String, status: Int) {
        registry.makeCounter(
            descriptor: MetricNameDescriptor(metricName: "lmcache_http_requests_total", unitName: "", helpText: "HTTP requests by endpoint and status."),
            labels: [("endpoint", endpoint), ("status", String(status))]
        ).increment()
    }

    /// Records one time to first token.
    func recordTTFT(seconds: Double) { ttft.record(seconds) }

    /// Records a generation's token counts.
    func recordGeneration(promptTokens: Int, cachedTokens: Int, generatedTokens: Int) {
        state.withLock { state in
            state.promptTokensComputed += promptTokens - cachedTokens
            state.promptTokensLoaded += cachedTokens
            state.generatedTokens += generatedTokens
            state.generations += 1
        }
    }

    /// Counts a generation (streamed or not) stopped because its client went away.
    func countDisconnect() { disconnects.increment() }

    /// Counts a request cancelled because it ran past the request timeout.
    func countTimeout() { timeouts.increment() }

    /// Marks one more generation as running or queued, unless `limit` are already; returns whether it did.
    func admit(limit: Int) -> Bool {
        state.withLock { state in
            guard state.running < limit else { return false }
            state.running += 1
            return true
        }
    }

    /// Marks an admitted generation as done.
    func leave() { state.withLock { $0.running -= 1 } }

    /// The Prometheus text exposition of every metric.
    func render(storage: StorageManager?, engine: any ServingEngine) -> String {
        // Under the lock, so that two pages rendered at once do not interleave a counter's reset.
        state.withLock { state in
            copyFigures(state, storage: storage, engine: engine)
        }
        var out = registry.emitToBuffer()
        if let shared = PrometheusBackend.registry { shared.emit(into: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Sets the gauges, and the counters kept elsewhere, to their current values.
    private func copyFigures(_ s: State, storage: StorageManager?, engine: any ServingEngine) {
        func gauge(_ name: String, _ help: String, _ value: Double, _ labels: [(String, String)] = []) {
            registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels).set(value)
        }
        func counter(_ name: String, _ help: String, _ value: Int, _ labels: [(String, String)] = []) {
            let counter = registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
            counter.reset()
            counter.increment(by: Int64(value))
        }
        let load = engine.load
        gauge("lmcache_requests_running", "Generations in progress or queued.", Double(s.running))
        gauge("lmcache_engine_sequences_running", "Sequences the engine is prefilling or decoding.", Double(load.running))
        gauge("lmcache_engine_requests_waiting", "Requests waiting for the engine to admit them.", Double(load.waiting))
        counter(
            "lmcache_engine_requests_cancelled_total",
            "Requests the engine stopped because they were cancelled (client gone, shutdown), waiting or running.",
            engine.cancelledRequests
        )
        counter(
            "lmcache_engine_copied_prompt_tokens_total",
            "Prompt tokens copied from another request's keys and values in the engine instead of computed.",
            engine.copiedPromptTokens
        )
        gauge(
            "lmcache_engine_free_kv_bytes",
            "Bytes of KV pages of finished requests the engine keeps mapped for the next requests.",
            Double(engine.freeKVPageBytes)
        )
        let prompt = "Prompt tokens, by whether they were computed or loaded from the cache."
        counter("lmcache_prompt_tokens_total", prompt, s.promptTokensComputed, [("source", "computed")])
        counter("lmcache_prompt_tokens_total", prompt, s.promptTokensLoaded, [("source", "cache")])
        counter("lmcache_generation_tokens_total", "Generated tokens.", s.generatedTokens)
        let total = s.promptTokensComputed + s.promptTokensLoaded
        gauge(
            "lmcache_cache_hit_rate", "Share of prompt tokens loaded from the cache.",
            total == 0 ? 0 : Double(s.promptTokensLoaded) / Double(total))
        // With the cache on, every generation asks it for its prompt; with it off, none does.
        let cached = engine.usesCache
        counter(
            "lmcache:num_retrieve_requests", "Generations whose prompt the cache was asked for (LMCache's name).",
            cached ? s.generations : 0)
        counter(
            "lmcache:num_requested_tokens", "Prompt tokens of those generations (LMCache's name).",
            cached ? total : 0)
        counter(
            "lmcache:num_hit_tokens", "Prompt tokens loaded from the cache (LMCache's name).",
            cached ? s.promptTokensLoaded : 0)
        gauge(
            "lmcache:retrieve_hit_rate", "Share of the requested prompt tokens loaded from the cache (LMCache's name).",
            cached && total > 0 ? Double(s.promptTokensLoaded) / Double(total) : 0)
        guard let storage else { return }
        let stats = storage.statistics
        for (tier, hits) in stats.hits {
            counter("lmcache_storage_hits_total", "Chunks served, by tier.", hits, [("tier", tier)])
        }
        counter("lmcache_storage_misses_total", "Chunk reads no tier could serve.", stats.misses)
        let writes = "Write-behind to slower tiers, by outcome."
        counter("lmcache_storage_writes_total", writes, stats.writesCompleted, [("outcome", "completed")])
        counter("lmcache_storage_writes_total", writes, stats.writesFailed, [("outcome", "failed")])
        counter("lmcache_storage_writes_total", writes, stats.writesDropped, [("outcome", "dropped")])
        if let cpu = storage.cpu?.statistics {
            let bytes = "CPU tier bytes, used and capacity."
            gauge("lmcache_cpu_tier_bytes", bytes, Double(cpu.usedBytes), [("kind", "used")])
            gauge("lmcache_cpu_tier_bytes", bytes, Double(cpu.capacity), [("kind", "capacity")])
            gauge("lmcache_cpu_tier_chunks", "Chunks in the CPU tier.", Double(cpu.count))
            counter("lmcache_cpu_tier_evictions_total", "Chunks evicted from the CPU tier.", cpu.evicted)
            gauge("lmcache:local_cache_usage", "CPU tier bytes in use (LMCache's name).", Double(cpu.usedBytes))
            counter("lmcache:local_cpu_evict_count", "Chunks evicted from the CPU tier (LMCache's name).", cpu.evicted)
        }
    }
}
