internal import Dispatch
internal import LMCacheCore
internal import Synchronization
public import Tokenizers

/// One completion to generate.
public struct GenerationRequest: Sendable, Hashable {
    /// The prompt's token ids (already templated and tokenized).
    public var prompt: [Int32]
    /// Most tokens to generate.
    public var maxTokens: Int
    /// How tokens are chosen.
    public var sampling: SamplingParameters
    /// Stop when the text contains one of these (the text is cut before it).
    public var stop: [String]
    /// The tenant salt of the cache keys (`nil`: the shared, unsalted namespace).
    public var salt: String?

    /// A request; greedy, no stop strings and no tenant by default.
    public init(
        prompt: [Int32],
        maxTokens: Int,
        sampling: SamplingParameters = .greedy,
        stop: [String] = [],
        salt: String? = nil
    ) {
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stop = stop
        self.salt = salt
    }
}

/// How a ``GenerationEngine`` shares itself between requests.
public struct SchedulerLimits: Sendable, Hashable {
    /// Most sequences running at once (prefilling or decoding); more requests wait in arrival order.
    public var maxSequences: Int
    /// Most prompt tokens computed in one step before the running sequences decode their next token: it
    /// bounds how long a long prompt holds back the others. Rounded down to a multiple of 256 (the
    /// engine's block), at least 256.
    public var prefillChunkTokens: Int
    /// KV positions the running sequences may reserve together (each reserves its prompt plus its
    /// `max_tokens`); a request that needs more than what is left waits. A request runs alone whatever
    /// it needs.
    public var maxKVTokens: Int
    /// KV positions of finished requests kept in the engine's memory (with the cache on), for later
    /// requests that start with the same tokens: the first tier, reused at token granularity and without
    /// a copy. The least recently used are dropped first; 0 keeps none.
    public var keptKVTokens: Int
    /// Most tokens of one prompt computed in a step while other requests are decoding (0: up to
    /// ``prefillChunkTokens``): every decoding request waits for the step, so a long prompt arriving
    /// meanwhile is computed in smaller pieces and their next tokens come sooner (a 512-token piece
    /// holds them back ~0.6 s on two cores of a recent CPU, a 128-token piece ~0.15 s). Short prompts
    /// (a question after a shared prompt) still start together in one step.
    public var longPrefillTokens: Int

    /// Limits; the defaults suit a small model on a few cores.
    public init(
        maxSequences: Int = 16,
        prefillChunkTokens: Int = 512,
        maxKVTokens: Int = 131_072,
        keptKVTokens: Int = 32_768,
        longPrefillTokens: Int = 128
    ) {
        self.maxSequences = maxSequences
        self.prefillChunkTokens = prefillChunkTokens
        self.maxKVTokens = maxKVTokens
        self.keptKVTokens = keptKVTokens
        self.longPrefillTokens = longPrefillTokens
    }

    /// A message saying what is wrong with these limits, or `nil` when they are usable.
    public var problem: String? {
        if maxSequences < 1 { return "the most sequences at once must be at least 1, not \(maxSequences)" }
        if prefillChunkTokens < linearBlockTokens {
            return "the prefill chunk must be at least \(linearBlockTokens) tokens, not \(prefillChunkTokens)"
        }
        if maxKVTokens < 1 { return "the KV token budget must be at least 1, not \(maxKVTokens)" }
        if keptKVTokens < 0 { return "the kept KV tokens must not be negative, not \(keptKVTokens)" }
        if longPrefillTokens < 0 {
            return "the long prefill threshold must not be negative, not \(longPrefillTokens)"
        }
        return nil
    }
}

/// A model, its tokenizer and (optionally) the cache, serving many requests at once on a dedicated
/// thread, so that long prefills never block the caller's executor.
///
/// Each request goes through the KV connector (``KVCacheConnector``), the engine's only view of the
/// cache: what the cache holds of the prompt is looked up and fetched (on the caller's task), then on
/// the engine's thread loaded, the rest prefilled, the new KV saved right after the first token, and
/// the continuation decoded.
///
/// Scheduling is continuous batching: up to ``SchedulerLimits/maxSequences`` sequences run at once;
/// every step computes one piece (at most ``SchedulerLimits/prefillChunkTokens``, and
/// ``SchedulerLimits/longPrefillTokens`` while others decode) of the unfinished prompt with the fewest
/// tokens left, then one token of every sequence that is decoding, all of them in a single
/// batched pass that reads the weights once. New requests join at the next step and finished ones
/// leave. Batching never changes a result: prompt pieces end where a split prefill equals a whole one
/// (``PrefillSplit``) and a batched decode step computes each sequence exactly as a step of its own, so
/// a request's tokens are the same whatever else runs.
///
/// ```swift
/// let engine = GenerationEngine(model: model, tokenizer: tokenizer, connector: connector)
/// let result = try await engine.generate(GenerationRequest(prompt: tokenizer.encode("Hi"), maxTokens: 8))
/// print(result.text, result.cachedTokens)
/// ```
public final class GenerationEngine: Sendable {
    /// The model.
    public let model: any LanguageModel
    /// Its tokenizer.
    public let tokenizer: any Tokenizer
    /// The cache (prefix reuse, or blending), or `nil` when it is off.
    public let connector: (any KVCacheConnector)?
    /// How requests share the engine.
    public let limits: SchedulerLimits
    private let queue = DispatchQueue(label: "lmcache.engine")
    private let scheduler: Scheduler
    private let inbox = Inbox()

    /// An engine over `model`; `connector` turns the cache on.
    /// - Precondition: `limits.problem` is `nil`.
    public init(
        model: any LanguageModel,
        tokenizer: any Tokenizer,
        connector: (any KVCacheConnector)? = nil,
        limits: SchedulerLimits = SchedulerLimits()
    ) {
        precondition(limits.problem == nil, limits.problem ?? "")
        self.model = model
        self.tokenizer = tokenizer
        self.connector = connector
        self.limits = limits
        self.scheduler = Scheduler(model: model, limits: limits)
    }

    /// The most tokens a sequence can hold.
    public var contextLength: Int { model.configuration.contextLength }

    /// Requests running and waiting right now.
    public var load: (running: Int, waiting: Int) {
        (scheduler.running.load(ordering: .relaxed), scheduler.waiting.load(ordering: .relaxed))
    }

    /// Requests stopped because they were cancelled (their tasks, or ``cancelAll()``), waiting or
    /// running, since the engine started.
    public var cancelledRequests: Int { scheduler.cancelledCount.load(ordering: .relaxed) }

    /// Prompt tokens copied from another request's keys and values (running or kept) instead of computed,
    /// since the engine started.
    public var copiedPromptTokens: Int { scheduler.copiedTokens.load(ordering: .relaxed) }

    /// Bytes of KV pages of finished requests kept mapped for the next requests (up to one context's
    /// worth): the engine's KV memory beyond its running and kept sequences.
    public var freeKVPageBytes: Int { scheduler.freePages.bytes }

    /// The list behind ``freeKVPageBytes``.
    package var freeKVPages: FreeKVPages { scheduler.freePages }

    /// Whether ``cancelAll()`` was called.
    public var isStopped: Bool { inbox.state.withLock { $0.stopped } }

    /// Stops the engine for good, as a server does when it shuts down: every waiting and running request
    /// is cancelled exactly as if its task were (the same flag, so the scheduler drops it at its next step:
    /// waiting ones throw `CancellationError`, running ones return what they have and free their
    /// sequences), and later calls to ``generate(_:onToken:)`` throw ``InferenceError/stopped(_:)``.
    public func cancelAll() {
        // The scheduler's loop marks the jobs it holds (and those submitted) when it next looks at the
        // inbox, before its next step; an idle loop holds none.
        inbox.state.withLock { $0.stopped = true }
    }

    /// Generates a completion, calling `onToken` with each new token and its text as soon as it exists.
    ///
    /// - Parameters:
    ///   - request: the prompt and settings.
    ///   - onToken: called on the engine's thread (keep it short: the other sequences wait); return
    ///     `false` to stop early (a client went away).
    /// - Returns: the tokens, text and finish reason, with how many prompt tokens came from the cache.
    /// - Throws: ``InferenceError`` for an empty or too long prompt or invalid tokens, or once
    ///   ``cancelAll()`` has stopped the engine; `CancellationError` when the task is cancelled before the
    ///   request starts (a running request stops and returns what it has).
    public func generate(
        _ request: GenerationRequest,
        onToken: @escaping @Sendable (Int32, String) -> Bool = { _, _ in true }
    ) async throws -> GenerationResult {
        guard !request.prompt.isEmpty else { throw InferenceError.invalidInput("the prompt has no tokens") }
        guard !isStopped else { throw InferenceError.stopped("the engine is shutting down") }
        guard request.prompt.count < contextLength else {
            throw InferenceError.invalidInput(
                "the prompt has \(request.prompt.count) tokens; the model's context is \(contextLength)"
            )
        }
        let cache: (any CachedPrompt)? = await connector?.lookup(request.prompt, salt: request.salt)
        try Task.checkCancellation()
        let job = Job(
            request: request,
            maxTokens: min(request.maxTokens, contextLength - request.prompt.count),
            cache: cache,
            tokenizer: tokenizer,
            onToken: onToken
        )
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                job.continuation = continuation
                submit(job)
            }
        } onCancel: {
            job.cancelled.store(true, ordering: .releasing)
        }
    }

    /// Queues `job` and starts the scheduler's loop if it is idle; fails it once the engine is stopped.
    private func submit(_ job: Job) {
        let start = inbox.state.withLock { state -> Bool? in
            guard !state.stopped else { return nil }
            self.scheduler.waiting.add(1, ordering: .relaxed)
            state.jobs.append(job)
            defer { state.running = true }
            return !state.running
        }
        guard let start else {
            return job.resume(with: .failure(InferenceError.stopped("the engine is shutting down")))
        }
        guard start else { return }
        let scheduler = self.scheduler
        let inbox = self.inbox
        queue.async { scheduler.run(inbox: inbox) }
    }
}

/// Requests submitted since the scheduler last looked, and whether its loop runs. The engine and the
/// loop both hold it, so the loop can finish after the engine is gone.
private final class Inbox: Sendable {
    struct State: Sendable {
        var jobs: [Job] = []
        var running = false
        /// Set by ``GenerationEngine/cancelAll()``: every job is cancelled and none is accepted.
        var stopped = false
    }

    let state = Mutex(State())
}

/// One request inside the engine.
///
/// `@unchecked Sendable`: the immutable fields are set before submission; `continuation` is set before
/// the job is published through the inbox's lock; everything else is used only on the engine's serial
/// queue; `cancelled` is atomic.
private final class Job: @unchecked Sendable {
    enum Phase { case waiting, prefill, decode }

    let request: GenerationRequest
    let maxTokens: Int
    let onToken: @Sendable (Int32, String) -> Bool
    let cancelled = Atomic(false)
    var continuation: CheckedContinuation<GenerationResult, any Error>?

    var phase = Phase.waiting
    var cache: (any CachedPrompt)?
    var sequence: SequenceKV?
    var stream: TokenStream
    var loaded = 0
    var promptSaved = false
    var next: Int32 = 0

    init(
        request: GenerationRequest,
        maxTokens: Int,
        cache: (any CachedPrompt)?,
        tokenizer: any Tokenizer,
        onToken: @escaping @Sendable (Int32, String) -> Bool
    ) {
        self.request = request
        self.maxTokens = maxTokens
        self.cache = cache
        self.onToken = onToken
        self.stream = TokenStream(
            maxTokens: maxTokens,
            sampling: request.sampling,
            stopStrings: request.stop,
            tokenizer: tokenizer
        )
    }

    /// Prompt tokens not computed yet.
    var remainingPromptTokens: Int { request.prompt.count - (sequence?.count ?? 0) }

    /// KV positions this request reserves.
    var reservation: Int { request.prompt.count + maxTokens }

    var isCancelled: Bool { cancelled.load(ordering: .acquiring) }

    func resume(with result: Result<GenerationResult, any Error>) {
        continuation?.resume(with: result)
        continuation = nil
    }
}

/// The scheduler's state; used only on the engine's serial queue (hence `@unchecked Sendable`), but
/// for the two counters, which are atomic.
private final class Scheduler: @unchecked Sendable {
    let model: any LanguageModel
    let limits: SchedulerLimits
    let workspace = Workspace()
    /// Finished requests' sequences with their KV, most recently used last: a new request whose prompt
    /// starts with one's tokens takes it over and computes only the rest.
    var kept: [KeptSequence] = []
    /// Positions held by `kept`.
    var keptTokens = 0
    var pending: [Job] = []
    var active: [Job] = []
    var reserved = 0
    let running = Atomic(0)
    let waiting = Atomic(0)
    /// Jobs stopped because they were cancelled.
    let cancelledCount = Atomic(0)
    /// Prompt tokens copied from another request's sequence instead of computed.
    let copiedTokens = Atomic(0)
    /// Pages of finished requests (their sequences' and dropped kept ones'), mapped for the next requests,
    /// whose first writes into new pages would cost page faults: up to one context's worth.
    let freePages: FreeKVPages

    init(model: any LanguageModel, limits: SchedulerLimits) {
        self.model = model
        self.limits = limits
        freePages = FreeKVPages(limit: model.kvLayout.byteCount(tokens: model.configuration.contextLength))
    }

    /// Runs steps until no request is left.
    func run(inbox: Inbox) {
        while takeSubmitted(from: inbox) {
            step()
        }
    }

    /// Moves submitted jobs into `pending`; marks the loop stopped (under the inbox's lock, so that a
    /// job submitted meanwhile starts a new loop) and returns `false` when nothing is left to do.
    func takeSubmitted(from inbox: Inbox) -> Bool {
        inbox.state.withLock { state in
            pending.append(contentsOf: state.jobs)
            state.jobs.removeAll()
            if state.stopped {
                for job in pending + active { job.cancelled.store(true, ordering: .releasing) }
            }
            if pending.isEmpty && active.isEmpty {
                state.running = false
                return false
            }
            return true
        }
    }

    /// Admits what fits, computes one prompt piece, then one decode step of every decoding sequence.
    func step() {
        for job in pending where job.isCancelled {
            waiting.subtract(1, ordering: .relaxed)
            cancelledCount.add(1, ordering: .relaxed)
            job.resume(with: .failure(CancellationError()))
        }
        pending.removeAll { $0.continuation == nil }
        while let job = pending.first, active.count < limits.maxSequences,
            active.isEmpty || reserved + job.reservation <= limits.maxKVTokens
        {
            pending.removeFirst()
            waiting.subtract(1, ordering: .relaxed)
            admit(job)
        }
        // A cancelled sequence leaves before this step computes anything for it; `finish` frees it.
        for job in active where job.isCancelled {
            finish(job)
        }
        // With the batch-invariant arithmetic, prompt pieces up to one piece's worth of tokens in all
        // and a token of every decoding sequence run in one pass: several short prompts (the questions
        // after a shared document) start in one step rather than one step each, the weights are read
        // once for all of them, and the decoding sequences wait for no more prefill than one piece.
        // With the reference arithmetic, whose pieces must end on the engine's blocks, one piece per
        // step, then a decode step.
        guard PrefillSplit.alignment == 1 else {
            let prefilling = active.filter { $0.phase == .prefill }
            if let (job, donor) = nextPrefill(prefilling, prefilling: prefilling) {
                take(donor, for: job)
                prefillPiece(job, limit: pieceTokens)
            }
            let decoding = active.filter { $0.phase == .decode }
            if !decoding.isEmpty { decodeStep(decoding) }
            return
        }
        let decoding = active.filter { $0.phase == .decode }
        let prefilling = active.filter { $0.phase == .prefill }
        var candidates = prefilling
        var pieces: [(job: Job, end: Int)] = []
        var budget = pieceTokens
        let pieceLimit = decoding.isEmpty || limits.longPrefillTokens == 0
            ? pieceTokens : min(pieceTokens, limits.longPrefillTokens)
        while budget > 0, let (job, donor) = nextPrefill(candidates, prefilling: prefilling) {
            candidates.removeAll { $0 === job }
            take(donor, for: job)
            guard let sequence = job.sequence, job.cache?.isExact ?? true else {
                // A blended prompt is computed whole, in a pass of its own.
                budget -= prefillPiece(job, limit: budget)
                continue
            }
            // At most `longPrefillTokens` of one prompt beside decoding sequences (see SchedulerLimits).
            let end = min(job.request.prompt.count, sequence.count + min(budget, pieceLimit))
            budget -= end - sequence.count
            pieces.append((job, end))
        }
        guard !pieces.isEmpty || !decoding.isEmpty else { return }
        let work =
            pieces.map { job, end in
                let prompt = job.request.prompt
                return ForwardPiece(
                    tokens: Array(prompt[job.sequence!.count..<end]),
                    sequence: job.sequence!,
                    wantsLogits: end == prompt.count
                )
            } + decoding.map { ForwardPiece(tokens: [$0.next], sequence: $0.sequence!) }
        let logits: [Float]
        do {
            logits = try model.forward(work, workspace: workspace)
        } catch {
            // Nothing was computed (a pass checks every piece first): the pieces one by one, so that only
            // the request at fault fails.
            for (job, end) in pieces { prefillPiece(job, limit: end - job.sequence!.count) }
            if !decoding.isEmpty { decodeStep(decoding) }
            return
        }
        let vocabulary = model.configuration.vocabularySize
        let finishing = pieces.filter { $0.end == $0.job.request.prompt.count }.map(\.job)
        for (i, job) in (finishing + decoding).enumerated() {
            job.phase = .decode
            deliver(logits[(i * vocabulary)..<((i + 1) * vocabulary)], to: job)
        }
    }

    /// Copies the prefix `donor` holds of `job`'s prompt into its sequence (see ``nextPrefill``).
    func take(_ donor: (SequenceKV, Int)?, for job: Job) {
        guard let (source, shared) = donor, let sequence = job.sequence else { return }
        do {
            let held = sequence.count
            try sequence.copyPrefix(of: source, count: shared)
            job.loaded = shared
            copiedTokens.add(shared - held, ordering: .relaxed)
        } catch {
            // Not expected (same model, checked lengths); the prompt is then computed instead.
        }
    }

    func admit(_ job: Job) {
        job.phase = .prefill
        active.append(job)
        reserved += job.reservation
        running.add(1, ordering: .relaxed)
        let prefix = job.cache.flatMap { $0.isExact && $0.tokens == job.request.prompt ? $0 : nil }
        // The engine's own memory first: a kept sequence that shares more of the prompt than the tiers
        // can load is taken over as it is (no copy), cut back to the shared tokens, when that keeps at
        // least as many of its tokens as it drops (a new question after a document, the next round of a
        // chat). One that shares less (another document after the same few template tokens) stays kept
        // for the prompts of its own document: the shared rows are copied from it instead (see
        // `nextPrefill`). At least one token is left to compute, for the logits.
        if let prefix, let (index, shared) = bestKept(for: job.request.prompt, salt: job.request.salt),
            shared > prefix.loadableTokens, kept[index].sequence.count - shared <= shared
        {
            let sequence = kept.remove(at: index).sequence
            keptTokens -= sequence.count
            sequence.truncate(to: shared)
            job.sequence = sequence
            job.loaded = shared
            return
        }
        let sequence = model.makeSequence()
        sequence.freePages = freePages
        job.sequence = sequence
        guard let cache = job.cache, cache.isExact else { return }
        guard let prefix else {
            return fail(job, InferenceError.invalidInput("the cache lookup is of another prompt"))
        }
        do {
            job.loaded = try prefix.load(into: sequence)
        } catch {
            fail(job, error)
        }
    }

    /// The prompt among `candidates` to compute a piece of next, and the sequence to copy its first
    /// tokens from first; `prefilling` are all the prompts being computed.
    ///
    /// The prompt with the fewest tokens left goes first (the oldest on ties): short prompts, such as a
    /// cache hit's tail, get their first token without waiting for a long prompt to finish. Tokens that
    /// another sequence of the same tenant holds (a request running or finished, not blended) count as
    /// done: they are copied instead of computed. A prompt that shares more with a prompt being computed
    /// ahead of it than it holds waits for it, so that many requests arriving at once with one system
    /// prompt compute it once, not once each.
    func nextPrefill(_ candidates: [Job], prefilling: [Job]) -> (job: Job, donor: (SequenceKV, Int)?)? {
        var best: (job: Job, donor: (SequenceKV, Int)?, remaining: Int)?
        for job in candidates {
            guard let sequence = job.sequence else { continue }
            var donor: (SequenceKV, Int)?
            if sharesPrefixes(job) && sequence.count == job.loaded {
                donor = bestDonor(for: job, holding: sequence.count)
                if isWaitingForPrefix(job, holding: max(sequence.count, donor?.1 ?? 0), among: prefilling) { continue }
            }
            let remaining = job.request.prompt.count - max(sequence.count, donor?.1 ?? 0)
            if remaining < best?.remaining ?? .max { best = (job, donor, remaining) }
        }
        return best.map { ($0.job, $0.donor) }
    }

    /// Whether `job` may take keys and values that other requests computed: it uses the cache for
    /// prefix reuse, with the arithmetic that makes every split of a prompt compute the same values.
    func sharesPrefixes(_ job: Job) -> Bool {
        guard let cache = job.cache else { return false }
        return cache.isExact && PrefillSplit.alignment == 1
    }

    /// Whether a prompt of the same tenant being computed ahead of `job` (more tokens computed, or as
    /// many and older) will hold at least ``waitGain`` more of `job`'s prompt than `job` can hold now
    /// (`available` tokens: its own, or a donor's), and has not yet.
    func isWaitingForPrefix(_ job: Job, holding available: Int, among prefilling: [Job]) -> Bool {
        guard let held = job.sequence?.count, let order = active.firstIndex(where: { $0 === job }) else { return false }
        for other in prefilling where other !== job && other.request.salt == job.request.salt && sharesPrefixes(other) {
            guard let progress = other.sequence?.count,
                progress > held || (progress == held && (active.firstIndex { $0 === other } ?? .max) < order)
            else { continue }
            let common = sharedPrefix(other.request.prompt, job.request.prompt, limit: job.request.prompt.count - 1)
            if common >= available + waitGain && progress < common { return true }
        }
        return false
    }

    /// Fewest tokens worth waiting a step for: computing a few tokens more in a batched pass costs less
    /// than a step (a decode step of every running sequence at least). Questions after one system
    /// prompt that begin with the same words do not wait for each other; they wait for the prompt.
    let waitGain = 64

    /// The sequence of `job`'s tenant (a running request's, or a kept one) holding the longest prefix of
    /// its prompt beyond `held` tokens that the rest can be computed after, and that prefix's length.
    func bestDonor(for job: Job, holding held: Int) -> (SequenceKV, Int)? {
        let running = active.lazy.filter { $0 !== job && $0.request.salt == job.request.salt && self.sharesPrefixes($0) }
        let candidates = running.compactMap(\.sequence) + kept.lazy.filter { $0.salt == job.request.salt }.map(\.sequence)
        return longestPrefix(of: job.request.prompt, among: candidates, longerThan: held)
    }

    /// The kept sequence of tenant `salt` sharing the longest prefix with `prompt` that the rest of the
    /// prompt can be computed after, its index in `kept` and that prefix's length; `nil` when none
    /// shares a token.
    func bestKept(for prompt: [Int32], salt: String?) -> (index: Int, shared: Int)? {
        let candidates = kept.lazy.filter { $0.salt == salt }.map(\.sequence)
        guard let (sequence, shared) = longestPrefix(of: prompt, among: candidates, longerThan: 0),
            let index = kept.firstIndex(where: { $0.sequence === sequence })
        else { return nil }
        return (index, shared)
    }

    /// Among `sequences`, the one holding the longest prefix of `prompt` (at most `prompt.count − 1`
    /// tokens, so that one is left to compute) longer than `minimum` tokens that the rest of the prompt
    /// can be computed after, and that prefix's length. A sequence loaded from the cache holds its
    /// sliding-window layers only near the end of what it loaded, so it cannot continue after a prefix
    /// that ends much earlier.
    func longestPrefix(
        of prompt: [Int32],
        among sequences: some Sequence<SequenceKV>,
        longerThan minimum: Int
    ) -> (SequenceKV, Int)? {
        let windows = model.attentionWindows
        var best: (SequenceKV, Int)?
        for sequence in sequences {
            let shared = sharedPrefix(sequence.tokens, prompt, limit: prompt.count - 1)
            if shared > max(minimum, best?.1 ?? 0) && sequence.canContinue(at: shared, windows: windows) {
                best = (sequence, shared)
            }
        }
        return best
    }

    /// Most prompt tokens computed in one piece (and in one step).
    var pieceTokens: Int { limits.prefillChunkTokens / linearBlockTokens * linearBlockTokens }

    /// Computes the next piece of `job`'s prompt, of at most `limit` tokens (``pieceTokens`` at most;
    /// a blended prompt whole); the last piece yields its first token.
    /// - Returns: the tokens computed.
    @discardableResult
    func prefillPiece(_ job: Job, limit: Int) -> Int {
        guard let sequence = job.sequence else { return 0 }
        let prompt = job.request.prompt
        if let cache = job.cache, !cache.isExact {
            // Blending computes the whole prompt in one pass (segments are re-rotated and partly recomputed).
            do {
                let blended = try cache.prefill(model: model, sequence: sequence, workspace: workspace)
                job.loaded = blended.reused
                job.phase = .decode
                deliver(blended.logits[...], to: job)
            } catch {
                fail(job, error)
            }
            return prompt.count
        }
        let start = sequence.count
        var end = prompt.count
        let chunk = min(pieceTokens, limit)
        if end - start > chunk {
            // Pieces end where a piece gives the result of one prefill: anywhere with the invariant
            // arithmetic, else on the engine's blocks.
            let alignment = PrefillSplit.alignment
            end = (start + chunk) / alignment * alignment
        }
        do {
            let logits = try model.forward(
                Array(prompt[start..<end]),
                sequence: sequence,
                outputs: end == prompt.count ? .last : .none,
                workspace: workspace
            )
            if end == prompt.count {
                job.phase = .decode
                deliver(logits[...], to: job)
            }
        } catch {
            fail(job, error)
        }
        return end - start
    }

    /// One token for every sequence in `jobs`, in one batched pass.
    func decodeStep(_ jobs: [Job]) {
        let vocabulary = model.configuration.vocabularySize
        do {
            let logits = try model.decode(jobs.map(\.next), sequences: jobs.map { $0.sequence! }, workspace: workspace)
            for (i, job) in jobs.enumerated() {
                deliver(logits[(i * vocabulary)..<((i + 1) * vocabulary)], to: job)
            }
        } catch {
            for job in jobs { fail(job, error) }
        }
    }

    /// Chooses `job`'s next token from `logits`, reports it, and finishes the job when it is done.
    func deliver(_ logits: ArraySlice<Float>, to job: Job) {
        if let (token, piece) = job.stream.accept(logits) {
            let keepGoing = job.onToken(token, piece) && !job.isCancelled
            // Saved after the first token, so that storing never delays it.
            saveIfPending(job)
            if !keepGoing { job.stream.stop() }
            job.next = token
        }
        if job.stream.isFinished { finish(job) }
    }

    func saveIfPending(_ job: Job) {
        guard !job.promptSaved, let cache = job.cache, let sequence = job.sequence,
            sequence.count >= job.request.prompt.count
        else { return }
        cache.save(from: sequence)
        job.promptSaved = true
    }

    func finish(_ job: Job) {
        saveIfPending(job)
        if job.promptSaved, let cache = job.cache, let sequence = job.sequence {
            cache.saveDecoded(from: sequence)
        }
        let result = job.stream.result(promptTokens: job.request.prompt.count, cachedTokens: job.loaded)
        if job.isCancelled { cancelledCount.add(1, ordering: .relaxed) }
        release(job, keep: true)
        job.resume(with: .success(result))
    }

    func fail(_ job: Job, _ error: any Error) {
        release(job)
        job.resume(with: .failure(error))
    }

    /// Takes `job` out of the running set; keeps its sequence with its KV for later prompts that start
    /// with the same tokens (when the cache is on), else lets it go (its pages go to `freePages`).
    func release(_ job: Job, keep: Bool = false) {
        guard let index = active.firstIndex(where: { $0 === job }) else { return }
        active.remove(at: index)
        reserved -= job.reservation
        running.subtract(1, ordering: .relaxed)
        job.phase = .waiting
        let cached = job.cache?.isExact ?? false
        job.cache = nil
        guard let sequence = job.sequence else { return }
        job.sequence = nil
        if keep && cached && sequence.count > 0 && sequence.count <= limits.keptKVTokens
            && PrefillSplit.alignment == 1
        {
            kept.append(KeptSequence(sequence: sequence, salt: job.request.salt))
            keptTokens += sequence.count
            // The dropped sequences' pages go to `freePages`.
            while keptTokens > limits.keptKVTokens, !kept.isEmpty {
                keptTokens -= kept.removeFirst().sequence.count
            }
        }
    }
}

/// How many leading tokens `a` and `b` have in common, at most `limit`.
private func sharedPrefix(_ a: [Int32], _ b: [Int32], limit: Int) -> Int {
    let end = min(a.count, b.count, limit)
    var shared = 0
    while shared < end && a[shared] == b[shared] { shared += 1 }
    return shared
}

/// A finished request's sequence kept in the engine's memory, with the tenant its KV belongs to.
private struct KeptSequence {
    let sequence: SequenceKV
    let salt: String?
}
