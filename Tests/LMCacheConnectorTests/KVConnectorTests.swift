import Foundation
import Inference
import LMCacheConnector
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Testing

/// Greedy continuation of `count` tokens from the logits of the last token in `session`.
func greedyContinuation(_ session: InferenceSession, logits first: [Float], count: Int) throws -> [Int32] {
    var logits = first
    var tokens: [Int32] = []
    while tokens.count < count {
        let next = Sampler.argmax(logits)
        tokens.append(next)
        if tokens.count == count { break }
        logits = try session.model.forward(
            [next],
            sequence: session.sequence,
            outputs: .last,
            workspace: session.workspace
        )
    }
    return tokens
}

/// Greedy generation without the cache, and the logits after the prompt.
func uncachedRun(
    _ model: any LanguageModel,
    _ prompt: [Int32],
    maxTokens: Int = 6
) throws -> (logits: [Float], tokens: [Int32]) {
    let session = InferenceSession(model: model)
    let logits = try session.prefill(prompt)
    return (logits, try greedyContinuation(session, logits: logits, count: maxTokens))
}

/// The same through the connector (load, prefill the rest, save); returns the tokens loaded too.
func cachedRun(
    _ connector: KVConnector,
    _ model: any LanguageModel,
    _ prompt: [Int32],
    salt: String? = nil,
    maxTokens: Int = 6
) async throws -> (logits: [Float], tokens: [Int32], loaded: Int) {
    let lookup = await connector.lookup(prompt, salt: salt)
    let session = InferenceSession(model: model)
    let (logits, loaded) = try session.prefill(prompt, cache: lookup)
    connector.save(lookup, from: session.sequence)
    return (logits, try greedyContinuation(session, logits: logits, count: maxTokens), loaded)
}

@Suite("KV connector on the real model")
struct KVConnectorTests {
    @Test("a cache hit gives exactly the logits and greedy tokens of an uncached run")
    func hitIsExact() async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector()
        let prompt = sampleTokens(600, seed: 11)
        let reference = try uncachedRun(model, prompt)

        let cold = try await cachedRun(connector, model, prompt)
        #expect(cold.loaded == 0)
        #expect(cold.tokens == reference.tokens)
        let coldLogitsEqual = cold.logits == reference.logits
        #expect(coldLogitsEqual)

        let warm = try await cachedRun(connector, model, prompt)
        #expect(warm.loaded == 512)
        #expect(warm.tokens == reference.tokens)
        let warmLogitsEqual = warm.logits == reference.logits
        #expect(warmLogitsEqual, "largest logit difference \(maxDifference(warm.logits, reference.logits))")

        // Chunks are stored at half precision (the engine's K/V are half-rounded), which is exact.
        #expect(connector.layout.dtype == .float16)
        let stored = await connector.lookup(prompt)
        #expect(stored.hitBytes == model.kvLayout.byteCount(tokens: 512) / 2)

        // The session's generation loop with the cache: same tokens, and it reports what it loaded.
        let result = try InferenceSession(model: model).generate(
            prompt: prompt,
            maxTokens: 6,
            cache: await connector.lookup(prompt)
        )
        #expect(result.tokens == reference.tokens)
        #expect(result.cachedTokens == 512)
        #expect(result.promptTokens == 600)
    }

    @Test("a hit read back from a disk tier with the lossless serde is exact; lossy serdes key their chunks apart")
    func diskSerdes() async throws {
        let model = try TestModel.model()
        let directory = FileManager.default.temporaryDirectory.appending(path: "lmcache-serde-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = LMCacheConfiguration()
        configuration.localCPU = false
        configuration.localDisk = directory
        configuration.maxLocalDiskSize = 0.0625
        configuration.localDiskSerde = .lossless
        let storage = try StorageManager(configuration: configuration, prefault: false)
        let connector = KVConnector(storage: storage, model: model, name: "gemma-3-270m", configuration: configuration)
        let prompt = sampleTokens(600, seed: 21)
        let reference = try uncachedRun(model, prompt)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await storage.run() }
            _ = try await cachedRun(connector, model, prompt, maxTokens: 1)
            await storage.flush()
            let warm = try await cachedRun(connector, model, prompt)
            #expect(warm.loaded == 512)
            #expect(warm.tokens == reference.tokens)
            let same = warm.logits == reference.logits
            #expect(same, "largest logit difference \(maxDifference(warm.logits, reference.logits))")
            group.cancelAll()
        }
        // The files hold encoded streams, smaller than the float16 KV.
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".lmkv") }
        let stored = try files.reduce(0) { total, name in
            total + (try FileManager.default.attributesOfItem(atPath: directory + "/" + name)[.size] as! Int)
        }
        #expect(!files.isEmpty && stored < model.kvLayout.byteCount(tokens: 512) / 2)

        var lossy = configuration
        lossy.localDiskSerde = .q8
        let lossyConnector = KVConnector(storage: storage, model: model, name: "gemma-3-270m", configuration: lossy)
        let exactKeys = connector.keyer().chunks(for: prompt).map(\.key)
        let lossyKeys = lossyConnector.keyer().chunks(for: prompt).map(\.key)
        #expect(Set(exactKeys).isDisjoint(with: lossyKeys))
        #expect(await lossyConnector.lookup(prompt).hits.isEmpty)
    }

    @Test("a prompt sharing only a prefix loads the shared full chunks and stays exact")
    func partialHit() async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector()
        let first = sampleTokens(600, seed: 12)
        _ = try await cachedRun(connector, model, first, maxTokens: 1)
        let second = Array(first[..<530]) + sampleTokens(80, seed: 13).dropFirst()
        let reference = try uncachedRun(model, second)
        let warm = try await cachedRun(connector, model, second)
        #expect(warm.loaded == 512)
        #expect(warm.tokens == reference.tokens)
        let same = warm.logits == reference.logits
        #expect(same)
    }

    @Test("a token changed in chunk k reuses only the chunks before k", arguments: [0, 1])
    func changedToken(chunk: Int) async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector()
        let original = sampleTokens(600, seed: 14)
        _ = try await cachedRun(connector, model, original, maxTokens: 1)
        var edited = original
        edited[chunk * 256 + 100] = edited[chunk * 256 + 100] == 500 ? 501 : 500
        let lookup = await connector.lookup(edited)
        #expect(lookup.hits.count == chunk)
        let reference = try uncachedRun(model, edited, maxTokens: 3)
        let warm = try await cachedRun(connector, model, edited, maxTokens: 3)
        #expect(warm.loaded == chunk * 256)
        #expect(warm.tokens == reference.tokens)
        let same = warm.logits == reference.logits
        #expect(same)
    }

    @Test("a fully cached prompt computes only its last token, exactly")
    func fullyCached() async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector()
        let prompt = sampleTokens(512, seed: 15)
        let reference = try uncachedRun(model, prompt)
        _ = try await cachedRun(connector, model, prompt, maxTokens: 1)
        #expect(await connector.storage.lookup(connector.keyer().keys(for: prompt)) == 2)
        // Both chunks are fetched; the load stops one token short, which is computed for the logits.
        let lookup = await connector.lookup(prompt)
        #expect(lookup.hitTokens == 512)
        let warm = try await cachedRun(connector, model, prompt)
        #expect(warm.loaded == 511)
        #expect(warm.tokens == reference.tokens)
        let same = warm.logits == reference.logits
        #expect(same)
    }

    @Test("tenant salts never share chunks")
    func tenants() async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector()
        let prompt = sampleTokens(300, seed: 16)
        _ = try await cachedRun(connector, model, prompt, salt: "alice", maxTokens: 1)
        #expect(await connector.lookup(prompt, salt: "alice").hits.count == 1)
        #expect(await connector.lookup(prompt, salt: "bob").hits.isEmpty)
        #expect(await connector.lookup(prompt).hits.isEmpty)
    }

    @Test("short prompts and a cache miss load nothing")
    func nothingToLoad() async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector()
        let prompt = sampleTokens(40, seed: 17)
        let run = try await cachedRun(connector, model, prompt, maxTokens: 2)
        #expect(run.loaded == 0)
        #expect(connector.save(await connector.lookup(prompt), from: InferenceSession(model: model).sequence) == 0)
    }

    @Test("window-aware loading: sliding-window layers are fetched only inside the window, exactly")
    func windowAware() async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector()
        let groups = try #require(connector.layerGroups)
        #expect(groups.full == [5, 11, 17])
        #expect(groups.windowed.count == 15 && groups.window == 512)
        let prompt = sampleTokens(1300, seed: 18)
        _ = try await cachedRun(connector, model, prompt, maxTokens: 1)
        let question = prompt + sampleTokens(20, seed: 19).dropFirst()
        let lookup = await connector.lookup(question)
        // 5 chunks load: full-attention layers for all five, windowed layers for the last two (the window
        // of position 1280 reaches back to 769).
        #expect(lookup.hits.count == 5)
        #expect(lookup.windowStart == 3 && lookup.windowHits.count == 2)
        let row = connector.layout.byteCount(tokens: 256) / connector.layout.layers
        #expect(lookup.hitBytes == (5 * 3 + 2 * 15) * row)
        #expect(lookup.hitBytes * 2 == connector.layout.byteCount(tokens: 1280))

        let reference = try uncachedRun(model, question, maxTokens: 4)
        let warm = try await cachedRun(connector, model, question, maxTokens: 4)
        #expect(warm.loaded == 1280)
        #expect(warm.tokens == reference.tokens)
        let same = warm.logits == reference.logits
        #expect(same, "largest logit difference \(maxDifference(warm.logits, reference.logits))")

        // A windowed part missing inside the window shortens the hit to end before its chunk.
        let windowedKey = try #require(connector.windowedKeyer()).keys(for: question)[4]
        #expect(connector.storage.cpu?.remove(windowedKey) == true)
        let shorter = await connector.lookup(question)
        #expect(shorter.hits.count == 4)
        let partial = try await cachedRun(connector, model, question, maxTokens: 4)
        #expect(partial.loaded == 1024)
        #expect(partial.tokens == reference.tokens)
    }

    @Test("a window-aware load records where its sliding-window layers start; nothing reads or exports before it")
    func partialLayersGuarded() async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector()
        let groups = try #require(connector.layerGroups)
        let prompt = sampleTokens(1300, seed: 18)
        _ = try await cachedRun(connector, model, prompt, maxTokens: 1)
        let lookup = await connector.lookup(prompt + [818])
        let sequence = model.makeSequence()
        #expect(try connector.load(lookup, into: sequence) == 1280)
        // The windowed layers hold positions 768..<1280 (chunks 3 and 4), the full-attention ones all.
        for layer in groups.windowed { #expect(sequence.firstFilled[layer] == 768) }
        for layer in groups.full { #expect(sequence.firstFilled[layer] == 0) }
        let windows = model.attentionWindows
        #expect(sequence.canContinue(at: 1280, windows: windows))
        // Position 1279's window starts at 768; position 1278's at 767, which was never filled.
        #expect(sequence.canContinue(at: 1279, windows: windows))
        #expect(!sequence.canContinue(at: 1278, windows: windows))
        #expect(!sequence.canContinue(at: 300, windows: windows))
        // Exports of rows never filled are refused, of filled ones allowed.
        #expect(throws: InferenceError.self) { try sequence.exportKV(512..<768) }
        var windowedRows = [UInt8](repeating: 0, count: groups.windowed.count * 2 * 256 * sequence.layout.rowElements * 4)
        windowedRows.withUnsafeMutableBytes { buffer in
            #expect(throws: InferenceError.self) { try sequence.exportKV(0..<256, layers: groups.windowed, into: buffer) }
            #expect(throws: Never.self) { try sequence.exportKV(768..<1024, layers: groups.windowed, into: buffer) }
        }
        #expect(try sequence.exportKV(768..<1024).count == connector.engineLayout.byteCount(tokens: 256))
        // Computing after a prefix the windowed rows do not cover is an error, not wrong logits.
        sequence.truncate(to: 300)
        #expect(throws: InferenceError.self) {
            _ = try model.forward([818], sequence: sequence, outputs: .last, workspace: Workspace())
        }
        // Emptied, the sequence is whole again.
        sequence.truncate(to: 0)
        #expect(sequence.firstFilled.allSatisfy { $0 == 0 })
        #expect(sequence.canContinue(at: 0, windows: windows))
    }

    @Test("window_aware_loading off: one object of all layers per chunk, exact")
    func wholeChunks() async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector(windowAware: false)
        #expect(connector.layerGroups == nil)
        let prompt = sampleTokens(600, seed: 20)
        let reference = try uncachedRun(model, prompt, maxTokens: 3)
        _ = try await cachedRun(connector, model, prompt, maxTokens: 1)
        let lookup = await connector.lookup(prompt)
        #expect(lookup.hits.map(\.layout.layers) == [18, 18])
        #expect(lookup.windowHits.isEmpty)
        let warm = try await cachedRun(connector, model, prompt, maxTokens: 3)
        #expect(warm.loaded == 512)
        #expect(warm.tokens == reference.tokens)
    }

    @Test(
        "save_decode_cache stores the chunks that generated tokens complete; off, only prompt chunks",
        arguments: [false, true]
    )
    func decodeCache(enabled: Bool) async throws {
        let model = try TestModel.model()
        let connector = try TestModel.connector(saveDecodeCache: enabled)
        let prompt = sampleTokens(500, seed: 21)
        let session = InferenceSession(model: model)
        let result = try session.generate(
            prompt: prompt,
            maxTokens: 16,
            cache: await connector.lookup(prompt)
        )
        #expect(result.tokens.count == 16)
        // The sequence holds the prompt and 15 generated tokens (the last one was never run).
        #expect(session.sequence.count == 515)
        let keys = connector.keyer().keys(for: session.sequence.tokens)
        #expect(keys.count == 2)
        #expect(await connector.storage.lookup(keys) == (enabled ? 2 : 1))
        if enabled {
            // A follow-up prompt made of that conversation loads both chunks; decoding rounded its keys
            // and values differently from a prefill, so its logits agree closely, not bit for bit.
            let followUp = session.sequence.tokens + [818]
            let reference = try uncachedRun(model, followUp, maxTokens: 1)
            let warm = try await cachedRun(connector, model, followUp, maxTokens: 1)
            #expect(warm.loaded == 512)
            #expect(maxDifference(warm.logits, reference.logits) < 0.5)
        }
    }
}
