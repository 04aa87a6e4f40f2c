internal import Inference
internal import LMCacheStorage
internal import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// The server's counters and the TTFT histogram, rendered as Prometheus text for `GET /metrics`.
///
/// Storage figures (hits per tier, write-behind, CPU tier bytes) are read from the
/// ``StorageManager`` when the page is rendered.
final class ServerMetrics: Sendable {
    /// Upper bounds of the time-to-first-token buckets, seconds.
    static let ttftBuckets: [Double] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

    private struct State {
        var requests: [String: Int] = [:]
        var ttftCounts = [Int](repeating: 0, count: ServerMetrics.ttftBuckets.count)
        var ttftSum = 0.0
        var ttftCount = 0
        var promptTokensComputed = 0
        var promptTokensLoaded = 0
        var generatedTokens = 0
        var running = 0
        var disconnects = 0
        var timeouts = 0
    }

    private let state = Mutex(State())

    /// Counts a finished request to `endpoint` with HTTP `status`.
    func countRequest(endpoint: String, status: Int) {
        state.withLock { $0.requests["endpoint=\"\(endpoint)\",status=\"\(status)\"", default: 0] += 1 }
    }

    /// Records one time to first token.
    func recordTTFT(seconds: Double) {
        state.withLock { state in
            for (index, bound) in Self.ttftBuckets.enumerated() where seconds <= bound { state.ttftCounts[index] += 1 }
            state.ttftSum += seconds
            state.ttftCount += 1
        }
    }

    /// Records a generation's token counts.
    func recordGeneration(promptTokens: Int, cachedTokens: Int, generatedTokens: Int) {
        state.withLock {
            $0.promptTokensComputed += promptTokens - cachedTokens
            $0.promptTokensLoaded += cachedTokens
            $0.generatedTokens += generatedTokens
        }
    }

    /// Counts a generation (streamed or not) stopped because its client went away.
    func countDisconnect() { state.withLock { $0.disconnects += 1 } }

    /// Counts a request cancelled because it ran past the request timeout.
    func countTimeout() { state.withLock { $0.timeouts += 1 } }

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
    func render(storage: StorageManager?, engine: GenerationEngine) -> String {
        let s = state.withLock { $0 }
        let load = engine.load
        var out = ""
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        family("lmcache_http_requests_total", "counter", "HTTP requests by endpoint and status.")
        for (labels, count) in s.requests.sorted(by: { $0.key < $1.key }) {
            out += "lmcache_http_requests_total{\(labels)} \(count)\n"
        }
        family("lmcache_requests_running", "gauge", "Generations in progress or queued.")
        out += "lmcache_requests_running \(s.running)\n"
        family("lmcache_engine_sequences_running", "gauge", "Sequences the engine is prefilling or decoding.")
        out += "lmcache_engine_sequences_running \(load.running)\n"
        family("lmcache_engine_requests_waiting", "gauge", "Requests waiting for the engine to admit them.")
        out += "lmcache_engine_requests_waiting \(load.waiting)\n"
        family(
            "lmcache_engine_requests_cancelled_total",
            "counter",
            "Requests the engine stopped because they were cancelled (client gone, shutdown), waiting or running."
        )
        out += "lmcache_engine_requests_cancelled_total \(engine.cancelledRequests)\n"
        family(
            "lmcache_engine_copied_prompt_tokens_total",
            "counter",
            "Prompt tokens copied from another request's keys and values in the engine instead of computed."
        )
        out += "lmcache_engine_copied_prompt_tokens_total \(engine.copiedPromptTokens)\n"
        family(
            "lmcache_client_disconnects_total",
            "counter",
            "Generations, streamed or not, stopped because the client went away."
        )
        out += "lmcache_client_disconnects_total \(s.disconnects)\n"
        family(
            "lmcache_request_timeouts_total",
            "counter",
            "Requests cancelled because they ran past the request timeout."
        )
        out += "lmcache_request_timeouts_total \(s.timeouts)\n"
        family("lmcache_time_to_first_token_seconds", "histogram", "Time from request to first generated token.")
        for (index, bound) in Self.ttftBuckets.enumerated() {
            out += "lmcache_time_to_first_token_seconds_bucket{le=\"\(bound)\"} \(s.ttftCounts[index])\n"
        }
        out += "lmcache_time_to_first_token_seconds_bucket{le=\"+Inf\"} \(s.ttftCount)\n"
        out += "lmcache_time_to_first_token_seconds_sum \(s.ttftSum)\n"
        out += "lmcache_time_to_first_token_seconds_count \(s.ttftCount)\n"
        family(
            "lmcache_prompt_tokens_total",
            "counter",
            "Prompt tokens, by whether they were computed or loaded from the cache."
        )
        out += "lmcache_prompt_tokens_total{source=\"computed\"} \(s.promptTokensComputed)\n"
        out += "lmcache_prompt_tokens_total{source=\"cache\"} \(s.promptTokensLoaded)\n"
        family("lmcache_generation_tokens_total", "counter", "Generated tokens.")
        out += "lmcache_generation_tokens_total \(s.generatedTokens)\n"
        let total = s.promptTokensComputed + s.promptTokensLoaded
        family("lmcache_cache_hit_rate", "gauge", "Share of prompt tokens loaded from the cache.")
        out += "lmcache_cache_hit_rate \(total == 0 ? 0 : Double(s.promptTokensLoaded) / Double(total))\n"
        if let storage {
            let stats = storage.statistics
            family("lmcache_storage_hits_total", "counter", "Chunks served, by tier.")
            for (tier, hits) in stats.hits.sorted(by: { $0.key < $1.key }) {
                out += "lmcache_storage_hits_total{tier=\"\(tier)\"} \(hits)\n"
            }
            family("lmcache_storage_misses_total", "counter", "Chunk reads no tier could serve.")
            out += "lmcache_storage_misses_total \(stats.misses)\n"
            family("lmcache_storage_writes_total", "counter", "Write-behind to slower tiers, by outcome.")
            out += "lmcache_storage_writes_total{outcome=\"completed\"} \(stats.writesCompleted)\n"
            out += "lmcache_storage_writes_total{outcome=\"failed\"} \(stats.writesFailed)\n"
            out += "lmcache_storage_writes_total{outcome=\"dropped\"} \(stats.writesDropped)\n"
            if let cpu = storage.cpu?.statistics {
                family("lmcache_cpu_tier_bytes", "gauge", "CPU tier bytes, used and capacity.")
                out += "lmcache_cpu_tier_bytes{kind=\"used\"} \(cpu.usedBytes)\n"
                out += "lmcache_cpu_tier_bytes{kind=\"capacity\"} \(cpu.capacity)\n"
                family("lmcache_cpu_tier_chunks", "gauge", "Chunks in the CPU tier.")
                out += "lmcache_cpu_tier_chunks \(cpu.count)\n"
                family("lmcache_cpu_tier_evictions_total", "counter", "Chunks evicted from the CPU tier.")
                out += "lmcache_cpu_tier_evictions_total \(cpu.evicted)\n"
            }
        }
        return out
    }
}
