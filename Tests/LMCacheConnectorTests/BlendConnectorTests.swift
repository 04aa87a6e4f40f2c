import Foundation
import GGUF
import Inference
import LMCacheConnector
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Testing
import Tokenizers

/// Prompts made of segments between a two-token separator that no sample text contains.
private enum BlendPrompts {
    static let separator: [Int32] = [30_001, 30_002]

    /// A document of `count` tokens (no BOS).
    static func text(_ count: Int, seed: UInt64) -> [Int32] { Array(sampleTokens(count + 1, seed: seed).dropFirst()) }

    /// BOS, then the segments joined by the separator.
    static func prompt(_ segments: [[Int32]]) -> [Int32] {
        [2] + segments.enumerated().flatMap { index, segment in (index == 0 ? [] : separator) + segment }
    }
}

/// A blender over a fresh CPU-only cache: 64-token chunks, partial chunks stored, segments of 32+ tokens.
private func makeBlender(ratios: [Double] = [0.15]) throws -> BlendConnector {
    let prefix = try TestModel.cache {
        $0.chunkSize = 64
        $0.saveUnfullChunk = true
    }.prefix
    return BlendConnector(
        prefix: prefix,
        options: BlendOptions(
            separator: BlendPrompts.separator,
            checkLayers: [1],
            recomputeRatios: ratios,
            minTokens: 32
        )
    )
}

/// One blended prefill (lookup, prefill, save) and its greedy continuation.
private func blendedRun(
    _ blender: BlendConnector,
    _ model: any LanguageModel,
    _ prompt: [Int32],
    checkLayers: [Int]? = nil,
    save: Bool = true
) async throws -> (logits: [Float], tokens: [Int32], reused: Int, lookup: BlendLookup, session: InferenceSession) {
    let lookup = await blender.lookup(prompt)
    let session = InferenceSession(model: model)
    let (logits, reused) = try blender.prefill(
        lookup,
        model: model,
        sequence: session.sequence,
        workspace: session.workspace,
        checkLayers: checkLayers ?? blender.options.checkLayers
    )
    if save { blender.save(lookup, from: session.sequence) }
    let tokens = try greedyContinuation(session, logits: logits, count: 4)
    return (logits, tokens, reused, lookup, session)
}

/// Floats of one layer's K (`kv` 0) or V (1) rows `range` of a sequence's float32 export.
private func rows(_ session: InferenceSession, _ range: Range<Int>, layer: Int, kv: Int) throws -> [Float] {
    let bytes = try session.sequence.exportKV(range)
    let row = session.model.kvLayout.kvHeads * session.model.kvLayout.headDim
    let start = (layer * 2 + kv) * range.count * row
    return bytes.withUnsafeBytes { raw in Array(raw.bindMemory(to: Float.self)[start..<(start + range.count * row)]) }
}

@Suite("Blending (CacheBlend) on the real model")
struct BlendConnectorTests {
    @Test("a segment reused at its stored position loads its KV bit for bit; elsewhere K is re-rotated, V unchanged")
    func rerotation() async throws {
        let model = try TestModel.model()
        let blender = try makeBlender()
        let document = BlendPrompts.text(150, seed: 5)
        let question = BlendPrompts.text(12, seed: 6)
        let first = BlendPrompts.prompt([BlendPrompts.text(20, seed: 3), document, question])
        let moved = BlendPrompts.prompt([BlendPrompts.text(97, seed: 4), document, question])
        let start = 1 + 20 + 2
        let movedStart = 1 + 97 + 2
        let span = start..<(start + document.count)
        let movedSpan = movedStart..<(movedStart + document.count)

        let cold = try await blendedRun(blender, model, first)
        #expect(cold.reused == 0)
        // The document at the same position after another first segment (an exact repeat of `first`
        // would be a prefix hit, which loads everything but the last token without blending).
        let samePlace = BlendPrompts.prompt([BlendPrompts.text(20, seed: 13), document, question])
        // 150 tokens in 64-token chunks: 3 stored chunks (the last partial), with their positions.
        let again = await blender.lookup(samePlace)
        #expect(
            again.hits.map(\.range) == [
                start..<(start + 64), (start + 64)..<(start + 128), (start + 128)..<span.upperBound,
            ]
        )
        #expect(again.hits.allSatisfy { $0.storedPosition == $0.range.lowerBound })

        // Naive reuse never recomputes cached tokens, so their rows are exactly what was loaded.
        let same = try await blendedRun(blender, model, samePlace, checkLayers: [], save: false)
        #expect(same.reused == document.count)
        for layer in [0, model.configuration.layers - 1] {
            for kv in 0..<2 {
                let loaded = try rows(same.session, span, layer: layer, kv: kv)
                let stored = try rows(cold.session, span, layer: layer, kv: kv)
                #expect(loaded == stored, "layer \(layer) \(kv == 0 ? "K" : "V")")
            }
        }

        // At another position V is copied unchanged. Layer 0's K and V depend only on the token and
        // its position, so there the re-rotated K must match K computed at the new position (to half
        // precision; the batched products round a row differently at another offset in its block).
        let shifted = try await blendedRun(blender, model, moved, checkLayers: [], save: false)
        #expect(shifted.reused == document.count)
        #expect(shifted.lookup.hits.allSatisfy { $0.storedPosition == $0.range.lowerBound - (movedStart - start) })
        for layer in [0, model.configuration.layers - 1] {
            let moved = try rows(shifted.session, movedSpan, layer: layer, kv: 1)
            #expect(try moved == rows(cold.session, span, layer: layer, kv: 1))
        }
        let reference = InferenceSession(model: model)
        _ = try reference.prefill(moved)
        func worst(_ a: [Float], _ b: [Float]) -> Float {
            zip(a, b).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? .infinity
        }
        let direct = try rows(reference, movedSpan, layer: 0, kv: 0)
        let rotatedError = worst(try rows(shifted.session, movedSpan, layer: 0, kv: 0), direct)
        #expect(rotatedError < 1e-2, "largest relative difference \(rotatedError)")
        let valueError = worst(
            try rows(shifted.session, movedSpan, layer: 0, kv: 1),
            try rows(reference, movedSpan, layer: 0, kv: 1)
        )
        #expect(valueError < 1e-2, "largest relative difference \(valueError)")
        // Without re-rotation the keys would be far off: the test can tell.
        #expect(worst(try rows(cold.session, span, layer: 0, kv: 0), direct) > 0.1)
    }

    @Test("with ratio 1 every token is recomputed: output equals full prefill exactly, at any position")
    func fullRatioIsExact() async throws {
        let model = try TestModel.model()
        let blender = try makeBlender(ratios: [1.0])
        let document = BlendPrompts.text(150, seed: 15)
        let other = BlendPrompts.text(70, seed: 16)
        let question = BlendPrompts.text(10, seed: 17)
        let first = BlendPrompts.prompt([BlendPrompts.text(20, seed: 13), document, other, question])
        _ = try await blendedRun(blender, model, first)
        // Same position, then the documents swapped behind another prefix (a prefix longer than a
        // 256-token block, which itself is a prefix hit on the second run).
        let moved = BlendPrompts.prompt([BlendPrompts.text(300, seed: 14), other, document, question])
        _ = try await blendedRun(blender, model, BlendPrompts.prompt([BlendPrompts.text(300, seed: 14), question]))
        for prompt in [first, moved] {
            let reference = try uncachedRun(model, prompt, maxTokens: 4)
            let blended = try await blendedRun(blender, model, prompt, save: false)
            #expect(blended.reused >= document.count + other.count)
            let equal = blended.logits == reference.logits
            #expect(equal, "largest logit difference \(maxDifference(blended.logits, reference.logits))")
            #expect(blended.tokens == reference.tokens)
        }
        #expect(try await blendedRun(blender, model, moved, save: false).reused >= 256 + document.count + other.count)
    }

    @Test("at the default ratio a moved segment is reused and only part of it is recomputed")
    func selectiveRecompute() async throws {
        let model = try TestModel.model()
        let blender = try makeBlender()
        let document = BlendPrompts.text(200, seed: 25)
        let question = BlendPrompts.text(10, seed: 27)
        _ = try await blendedRun(
            blender,
            model,
            BlendPrompts.prompt([BlendPrompts.text(30, seed: 23), document, question])
        )
        let moved = BlendPrompts.prompt([BlendPrompts.text(61, seed: 24), document, question])
        let reference = try uncachedRun(model, moved, maxTokens: 4)
        let blended = try await blendedRun(blender, model, moved, save: false)
        let naive = try await blendedRun(blender, model, moved, checkLayers: [], save: false)
        #expect(blended.reused == document.count)
        #expect(blended.logits.allSatisfy { $0.isFinite })
        // Selective recompute lands between naive reuse and full prefill.
        let blendError = maxDifference(blended.logits, reference.logits)
        let naiveError = maxDifference(naive.logits, reference.logits)
        #expect(blendError > 0 && blendError < naiveError, "blend \(blendError), naive \(naiveError)")
    }

    @Test("segments shorter than blend_min_tokens and prompts without hits take the ordinary path")
    func shortSegmentsAndMisses() async throws {
        let model = try TestModel.model()
        let blender = try makeBlender()
        let prompt = BlendPrompts.prompt([
            BlendPrompts.text(20, seed: 33), BlendPrompts.text(31, seed: 34), BlendPrompts.text(8, seed: 35),
        ])
        let reference = try uncachedRun(model, prompt, maxTokens: 4)
        // The first run computes everything; the repeat is an ordinary prefix hit of all but the last token.
        for expected in [0, prompt.count - 1] {
            let run = try await blendedRun(blender, model, prompt)
            #expect(run.reused == expected)
            #expect(run.lookup.chunks.isEmpty)
            let equal = run.logits == reference.logits
            #expect(equal)
            #expect(run.tokens == reference.tokens)
        }
    }

    @Test("with blending off the engine stores and loads prefix chunks only, exactly as before")
    func blendingOff() async throws {
        let model = try TestModel.model()
        let blender = try makeBlender()
        let prompt = BlendPrompts.prompt([BlendPrompts.text(300, seed: 43), BlendPrompts.text(100, seed: 44)])
        let reference = try uncachedRun(model, prompt, maxTokens: 4)
        let connector = blender.prefix
        // The repeat loads every token but the last (the partial last chunk too: save_unfull_chunk).
        for expected in [0, prompt.count - 1] {
            let (logits, tokens, loaded) = try await cachedRun(connector, model, prompt, maxTokens: 4)
            #expect(loaded == expected)
            #expect(logits == reference.logits)
            #expect(tokens == reference.tokens)
        }
        // No segment chunk or position record was written.
        let keyer = blender.keyer()
        for segment in blender.segments(of: prompt) {
            for chunk in keyer.chunks(for: prompt, segment: segment) {
                #expect(await connector.storage.lookup([keyer.positionKey(for: chunk.key)]) == 0)
                #expect(
                    await connector.storage.lookup([keyer.kvKey(for: chunk.key, position: chunk.range.lowerBound)]) == 0
                )
            }
        }
        // The generation engine without a blender behaves the same way.
        let engine = GenerationEngine(
            model: model,
            tokenizer: try makeTokenizer(from: GGUFFile(contentsOf: TestModel.path)),
            connector: connector
        )
        #expect(engine.connector is KVConnector)
        let result = try await engine.generate(GenerationRequest(prompt: prompt, maxTokens: 4))
        #expect(result.cachedTokens == prompt.count - 1)
        #expect(result.tokens == reference.tokens)
    }

    @Test("tenants with different salts never share segments")
    func salts() async throws {
        let model = try TestModel.model()
        let blender = try makeBlender()
        let document = BlendPrompts.text(100, seed: 53)
        let prompt = BlendPrompts.prompt([BlendPrompts.text(10, seed: 51), document, BlendPrompts.text(5, seed: 52)])
        let lookup = await blender.lookup(prompt, salt: "alice")
        let session = InferenceSession(model: model)
        _ = try lookup.prefill(model: model, sequence: session.sequence, workspace: session.workspace)
        lookup.save(from: session.sequence)
        // The document after another first segment: no prefix hit, so only segment chunks can be found.
        let other = BlendPrompts.prompt([BlendPrompts.text(10, seed: 61), document, BlendPrompts.text(5, seed: 52)])
        #expect(await blender.lookup(other, salt: "alice").hits.count == 2)
        #expect(await blender.lookup(other, salt: "bob").hits.isEmpty)
        #expect(await blender.lookup(other).hits.isEmpty)
    }
}
