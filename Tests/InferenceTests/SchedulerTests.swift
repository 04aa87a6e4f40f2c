import Foundation
import GGUF
import Inference
import LMCacheCore
import LMCacheTestSupport
import Synchronization
import Testing
import Tokenizers

/// The highest value a counter reached.
private final class Peak: Sendable {
    private let value = Mutex(0)
    func record(_ current: Int) { value.withLock { $0 = max($0, current) } }
    var peak: Int { value.withLock { $0 } }
}

@Suite("Continuous batching in the generation engine")
struct SchedulerTests {
    static func tokenizer() throws -> any Tokenizer {
        try makeTokenizer(from: GGUFFile(contentsOf: TestModel.path))
    }

    /// Prompts of several lengths, one longer than two 256-token pieces.
    static func prompts() -> [[Int32]] {
        BatchedDecodeTests.prompts(vocabulary: 20_000, lengths: [12, 140, 290, 610])
    }

    /// Greedy tokens of `prompt` run alone, without the engine or the cache.
    static func alone(_ model: any LanguageModel, _ prompt: [Int32], maxTokens: Int) throws -> [Int32] {
        try InferenceSession(model: model).generate(prompt: prompt, maxTokens: maxTokens).tokens
    }

    @Test("requests running together give exactly the tokens each gives alone, in prompt pieces of 256")
    func batchedEqualsAlone() async throws {
        let model = try TestModel.model()
        let prompts = Self.prompts()
        let expected = try prompts.map { try Self.alone(model, $0, maxTokens: 6) }
        let engine = GenerationEngine(
            model: model,
            tokenizer: try Self.tokenizer(),
            limits: SchedulerLimits(maxSequences: 4, prefillChunkTokens: 256)
        )
        let peak = Peak()
        let results = try await withThrowingTaskGroup(of: (Int, GenerationResult).self) { group in
            for (i, prompt) in prompts.enumerated() {
                group.addTask {
                    let result = try await engine.generate(
                        GenerationRequest(prompt: prompt, maxTokens: 6)
                    ) { _, _ in
                        peak.record(engine.load.running)
                        return true
                    }
                    return (i, result)
                }
            }
            return try await group.reduce(into: [Int: GenerationResult]()) { $0[$1.0] = $1.1 }
        }
        for (i, prompt) in prompts.enumerated() {
            #expect(results[i]?.tokens == expected[i], "prompt of \(prompt.count) tokens")
            #expect(results[i]?.promptTokens == prompt.count)
        }
        #expect(peak.peak > 1, "the requests never ran together")
        #expect(peak.peak <= 4)
        #expect(engine.load.running == 0 && engine.load.waiting == 0)
    }

    @Test("finished requests' KV pages are reused by the next requests, not mapped again")
    func freePagesReused() async throws {
        let model = try TestModel.model()
        let engine = GenerationEngine(model: model, tokenizer: try Self.tokenizer(), limits: SchedulerLimits())
        let pageBytes = model.kvLayout.byteCount(tokens: 256)
        let list = engine.freeKVPages
        #expect(engine.freeKVPageBytes == 0)
        // The engine lets go of a finished request's sequence on its own thread, about when the caller
        // resumes: wait for it.
        func waitForFreeBytes(_ bytes: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(30)
            while engine.freeKVPageBytes != bytes && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(engine.freeKVPageBytes == bytes)
        }
        let prompts = Self.prompts()  // 12, 140, 290 and 610 tokens
        // 610 + 4 positions: three pages mapped, on the list once the request ends (no cache: none kept).
        let first = try await engine.generate(GenerationRequest(prompt: prompts[3], maxTokens: 4))
        try await waitForFreeBytes(3 * pageBytes)
        #expect(list.misses == 3)
        // 290 + 4 positions: two pages taken from the list, none mapped, and given back.
        let second = try await engine.generate(GenerationRequest(prompt: prompts[2], maxTokens: 4))
        #expect(list.misses == 3)
        try await waitForFreeBytes(3 * pageBytes)
        #expect(first.tokens == (try Self.alone(model, prompts[3], maxTokens: 4)))
        #expect(second.tokens == (try Self.alone(model, prompts[2], maxTokens: 4)))
    }

    @Test("the cache stays exact when requests sharing a document run together")
    func batchedWithCache() async throws {
        let model = try TestModel.model()
        let document = BatchedDecodeTests.prompts(vocabulary: 20_000, lengths: [540])[0]
        let prompts = [document + [818, 5279], document + [1437, 603, 496]]
        let expected = try prompts.map { try Self.alone(model, $0, maxTokens: 5) }
        let engine = GenerationEngine(
            model: model,
            tokenizer: try Self.tokenizer(),
            connector: try TestModel.connector(),
            limits: SchedulerLimits(maxSequences: 2, prefillChunkTokens: 256)
        )
        // A first request stores the document; then both run at once, loading it.
        let first = try await engine.generate(GenerationRequest(prompt: document + [25], maxTokens: 1))
        #expect(first.cachedTokens == 0)
        async let a = engine.generate(GenerationRequest(prompt: prompts[0], maxTokens: 5))
        async let b = engine.generate(GenerationRequest(prompt: prompts[1], maxTokens: 5))
        let (ra, rb) = try await (a, b)
        // One takes over the first request's kept KV (the whole 540-token document), the other loads the
        // document's two full chunks from the CPU tier and copies the last 28 tokens from the first:
        // the three paths at once, all exact.
        #expect(ra.cachedTokens == 540 && rb.cachedTokens == 540)
        #expect(engine.copiedPromptTokens == 28)
        #expect(ra.tokens == expected[0])
        #expect(rb.tokens == expected[1])
    }

    @Test("a kept sequence loaded from the cache is taken over only where its sliding-window layers reach")
    func keptAfterWindowedLoad() async throws {
        let model = try TestModel.model()
        let document = BatchedDecodeTests.prompts(vocabulary: 20_000, lengths: [1300])[0]
        let connector = try TestModel.connector()
        let limits = SchedulerLimits(maxSequences: 1, prefillChunkTokens: 256)
        // One engine computes and stores the document; a second, on the same tiers, loads it (its
        // sliding-window layers only from position 768, the window of position 1280) and keeps it.
        let storer = GenerationEngine(
            model: model, tokenizer: try Self.tokenizer(), connector: connector, limits: limits)
        _ = try await storer.generate(GenerationRequest(prompt: document + [25], maxTokens: 1))
        let engine = GenerationEngine(
            model: model, tokenizer: try Self.tokenizer(), connector: connector, limits: limits)
        let loaded = try await engine.generate(GenerationRequest(prompt: document + [818], maxTokens: 1))
        #expect(loaded.cachedTokens == 1280)
        // A prompt sharing the document's first 300 tokens: the kept sequence lacks the windowed rows
        // those tokens' windows need, so the first chunk comes from the tiers instead.
        let branch = Array(document[..<300]) + BatchedDecodeTests.prompts(vocabulary: 20_000, lengths: [40])[0].dropFirst()
        let early = try await engine.generate(GenerationRequest(prompt: branch, maxTokens: 5))
        #expect(early.cachedTokens == 256)
        #expect(early.tokens == (try Self.alone(model, branch, maxTokens: 5)))
        // A prompt sharing 1290 tokens takes the kept sequence over: its window starts at 779.
        let late = Array(document[..<1290]) + [1437, 603, 496]
        let taken = try await engine.generate(GenerationRequest(prompt: late, maxTokens: 5))
        #expect(taken.cachedTokens == 1290)
        #expect(taken.tokens == (try Self.alone(model, late, maxTokens: 5)))
    }

    @Test("a prompt sharing a few tokens with a kept document copies them and leaves the document's KV kept")
    func keptNotTakenForAFewTokens() async throws {
        let model = try TestModel.model()
        let documents = BatchedDecodeTests.prompts(vocabulary: 20_000, lengths: [600, 600])
        // Two documents after the same 8 tokens (a chat template's), each asked a question, then the
        // first asked another: its KV must still be in the engine, beyond the tiers' whole chunks.
        let first = documents[0] + [818, 5279]
        let second = Array(documents[0][..<8]) + documents[1].dropFirst(8) + [1437, 603]
        let again = documents[0] + [496, 25, 1437]
        let engine = GenerationEngine(
            model: model,
            tokenizer: try Self.tokenizer(),
            connector: try TestModel.connector(),
            limits: SchedulerLimits(maxSequences: 2, prefillChunkTokens: 256)
        )
        let a = try await engine.generate(GenerationRequest(prompt: first, maxTokens: 3))
        #expect(a.cachedTokens == 0)
        let b = try await engine.generate(GenerationRequest(prompt: second, maxTokens: 3))
        #expect(b.cachedTokens == 8, "the template's tokens, copied from the first document's sequence")
        #expect(engine.copiedPromptTokens == 8)
        let c = try await engine.generate(GenerationRequest(prompt: again, maxTokens: 3))
        // Taken over from the kept sequence: all 600 document tokens, not the tiers' 512.
        #expect(c.cachedTokens == 600)
        #expect(engine.copiedPromptTokens == 8)
        #expect(a.tokens == (try Self.alone(model, first, maxTokens: 3)))
        #expect(b.tokens == (try Self.alone(model, second, maxTokens: 3)))
        #expect(c.tokens == (try Self.alone(model, again, maxTokens: 3)))
    }

    @Test("requests arriving together with one long prefix compute it once, exactly; another tenant copies nothing")
    func sharedPrefixInFlight() async throws {
        let model = try TestModel.model()
        let system = BatchedDecodeTests.prompts(vocabulary: 20_000, lengths: [700])[0]
        let questions: [[Int32]] = [[818, 5279, 603], [1437, 603], [496, 818, 25, 1437], [5279, 25]]
        let prompts = questions.map { system + $0 }
        let expected = try prompts.map { try Self.alone(model, $0, maxTokens: 4) }
        let engine = GenerationEngine(
            model: model,
            tokenizer: try Self.tokenizer(),
            connector: try TestModel.connector(),
            limits: SchedulerLimits(maxSequences: 5, prefillChunkTokens: 256)
        )
        let requests = prompts.map { GenerationRequest(prompt: $0, maxTokens: 4) }
            + [GenerationRequest(prompt: prompts[0], maxTokens: 4, salt: "other tenant")]
        let results = try await withThrowingTaskGroup(of: (Int, GenerationResult).self) { group in
            for (i, request) in requests.enumerated() {
                group.addTask { (i, try await engine.generate(request)) }
            }
            return try await group.reduce(into: [Int: GenerationResult]()) { $0[$1.0] = $1.1 }
        }
        for i in prompts.indices {
            #expect(results[i]?.tokens == expected[i], "request \(i)")
        }
        #expect(results[4]?.tokens == expected[0])
        // One request computes the 700 shared tokens; the other three of its tenant copy them.
        let cached = prompts.indices.map { results[$0]?.cachedTokens ?? -1 }
        #expect(cached.sorted() == [0, 700, 700, 700], "cached tokens \(cached)")
        #expect(engine.copiedPromptTokens >= 700)
        // The other tenant's request runs beside them and reuses none of their keys and values.
        #expect(results[4]?.cachedTokens == 0)
    }

    @Test("a prompt waits for one ahead of it only when that saves at least 64 tokens")
    func waitsOnlyForLongPrefixes() async throws {
        let model = try TestModel.model()
        let lines = BatchedDecodeTests.prompts(vocabulary: 20_000, lengths: [512, 100])
        let (system, section) = (lines[0], lines[1])
        // Two prompts share a 100-token section after the system prompt; two share only their first two
        // words (as questions beginning "What does" do).
        let prompts: [[Int32]] = [
            system + section + [25], system + section + [1437], system + [818, 5279, 603], system + [818, 5279, 1437],
        ]
        let expected = try prompts.map { try Self.alone(model, $0, maxTokens: 3) }
        let engine = GenerationEngine(
            model: model,
            tokenizer: try Self.tokenizer(),
            connector: try TestModel.connector(),
            limits: SchedulerLimits(maxSequences: 4, prefillChunkTokens: 256)
        )
        let results = try await withThrowingTaskGroup(of: (Int, GenerationResult).self) { group in
            for (i, prompt) in prompts.enumerated() {
                group.addTask { (i, try await engine.generate(GenerationRequest(prompt: prompt, maxTokens: 3))) }
            }
            return try await group.reduce(into: [Int: GenerationResult]()) { $0[$1.0] = $1.1 }
        }
        for i in prompts.indices {
            #expect(results[i]?.tokens == expected[i], "request \(i)")
        }
        // One computes the system prompt (in pieces of 256, so a piece ends where it ends); the second
        // prompt with the section waits for the first and takes it too (612 tokens); the two questions
        // take the system prompt and compute their words, neither waiting for the other.
        let cached = prompts.indices.map { results[$0]?.cachedTokens ?? -1 }
        #expect(cached.sorted() == [0, 512, 512, 612], "cached tokens \(cached)")
    }

    @Test("no more sequences run at once than allowed, by count and by KV budget")
    func limits() async throws {
        let model = try TestModel.model()
        let tokenizer = try Self.tokenizer()
        let prompts = Self.prompts().prefix(3)
        for limits in [
            SchedulerLimits(maxSequences: 1),
            // Each request reserves its prompt plus 4 tokens (16, 144, 294): no two fit together.
            SchedulerLimits(maxSequences: 8, maxKVTokens: 150),
        ] {
            let engine = GenerationEngine(model: model, tokenizer: tokenizer, limits: limits)
            let peak = Peak()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for prompt in prompts.reversed() {
                    group.addTask {
                        _ = try await engine.generate(GenerationRequest(prompt: prompt, maxTokens: 4)) { _, _ in
                            peak.record(engine.load.running)
                            return true
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(peak.peak == 1, "limits \(limits)")
        }
    }

    @Test("a consumer that stops early ends its request; a cancelled queued request throws")
    func stopAndCancel() async throws {
        let model = try TestModel.model()
        let engine = GenerationEngine(
            model: model,
            tokenizer: try Self.tokenizer(),
            limits: SchedulerLimits(maxSequences: 1)
        )
        let prompt = Self.prompts()[1]
        let expected = try Self.alone(model, prompt, maxTokens: 3)
        let stopped = try await engine.generate(GenerationRequest(prompt: prompt, maxTokens: 50)) { _, _ in false }
        #expect(stopped.tokens == [expected[0]])
        #expect(stopped.finishReason == .length)

        // The first request holds the only slot until the test lets it go; the second waits and is cancelled.
        let release = Mutex(false)
        let started = Mutex(false)
        // Its token limit is far beyond what it decodes before the test lets it go, even when other tests
        // keep this test's tasks waiting for seconds (the engine decodes on its own thread meanwhile).
        async let holder = engine.generate(GenerationRequest(prompt: prompt, maxTokens: 8000)) { _, _ in
            started.withLock { $0 = true }
            return !release.withLock { $0 }
        }
        while !started.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
        let queued = Task { try await engine.generate(GenerationRequest(prompt: prompt, maxTokens: 3)) }
        while engine.load.waiting == 0 { try await Task.sleep(for: .milliseconds(5)) }
        queued.cancel()
        await #expect(throws: CancellationError.self) { try await queued.value }
        release.withLock { $0 = true }
        let held = try await holder
        #expect(held.tokens.count < 8000)
        #expect(Array(held.tokens.prefix(3)) == expected)
        // The engine still serves.
        let after = try await engine.generate(GenerationRequest(prompt: prompt, maxTokens: 3))
        #expect(after.tokens == expected)
    }

    @Test("a short prompt arriving while a long one is computed gets its first token first")
    func shortestFirst() async throws {
        let model = try TestModel.model()
        let engine = GenerationEngine(
            model: model,
            tokenizer: try Self.tokenizer(),
            limits: SchedulerLimits(maxSequences: 2, prefillChunkTokens: 256)
        )
        let prompts = Self.prompts()
        let long = prompts[3] + prompts[2] + prompts[1]  // 1,040 tokens: five pieces
        let short = prompts[0]
        let order = Mutex<[String]>([])
        async let longRun = engine.generate(GenerationRequest(prompt: long, maxTokens: 2)) { _, _ in
            order.withLock { if !$0.contains("long") { $0.append("long") } }
            return true
        }
        while engine.load.running == 0 { try await Task.sleep(for: .milliseconds(1)) }
        let shortResult = try await engine.generate(GenerationRequest(prompt: short, maxTokens: 2)) { _, _ in
            order.withLock { if !$0.contains("short") { $0.append("short") } }
            return true
        }
        _ = try await longRun
        #expect(order.withLock { $0 } == ["short", "long"])
        #expect(shortResult.tokens == (try Self.alone(model, short, maxTokens: 2)))
    }

    @Test("a long prompt arriving while another request decodes is computed in pieces of the threshold", arguments: [64, 0])
    func longPrefillThreshold(threshold: Int) async throws {
        let model = try TestModel.model()
        let engine = GenerationEngine(
            model: model,
            tokenizer: try Self.tokenizer(),
            limits: SchedulerLimits(maxSequences: 2, prefillChunkTokens: 512, longPrefillTokens: threshold)
        )
        let prompts = Self.prompts()
        let long = prompts[3]  // 610 tokens: 10 pieces of 64, or 2 of up to 512
        let short = prompts[0]
        // The decoding request's tokens, and how many it had when the long prompt's first token came. It
        // decodes until the long request is done (so that it is decoding however late that one arrives).
        let decoded = Atomic(0)
        let seenAtFirst = Atomic(-1)
        let done = Atomic(false)
        async let decodingRun = engine.generate(GenerationRequest(prompt: short, maxTokens: 1000)) { _, _ in
            decoded.add(1, ordering: .relaxed)
            return !done.load(ordering: .relaxed)
        }
        while decoded.load(ordering: .relaxed) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        let before = decoded.load(ordering: .relaxed)
        let longResult = try await engine.generate(GenerationRequest(prompt: long, maxTokens: 2)) { _, _ in
            _ = seenAtFirst.compareExchange(expected: -1, desired: decoded.load(ordering: .relaxed), ordering: .relaxed)
            return true
        }
        done.store(true, ordering: .relaxed)
        let decodingResult = try await decodingRun
        #expect(decodingResult.tokens.count > seenAtFirst.load(ordering: .relaxed), "still decoding at the end")
        let between = seenAtFirst.load(ordering: .relaxed) - before
        if threshold > 0 {
            // One token of the decoding request a step: at least the 9 steps before the long prompt's last piece.
            #expect(between >= 9, "\(between) tokens decoded while 610 prompt tokens were computed")
        } else {
            #expect(between <= 5, "\(between) tokens decoded while 610 prompt tokens were computed")
        }
        #expect(longResult.tokens == (try Self.alone(model, long, maxTokens: 2)))
    }
}
