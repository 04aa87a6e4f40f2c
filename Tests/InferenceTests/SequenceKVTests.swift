import Foundation
import GGUF
import Inference
import LMCacheCore
import LMCacheTestSupport
import Testing

@Suite("Sequence KV memory")
struct SequenceKVTests {
    /// Splits at chunk boundaries (multiples of 256 tokens) must be bit-exact; other splits agree within
    /// float rounding.
    @Test(
        "prefill(prefix) + prefill(rest) gives the logits and KV of prefill(all): bit-identical at chunk boundaries",
        arguments: [(600, 256), (600, 512), (257, 256), (300, 64), (300, 299), (40, 17), (530, 1)])
    func splitPrefill(total: Int, prefix: Int) throws {
        let model = try TestModel.model()
        let tokens = sampleTokens(total)
        let whole = model.makeSequence()
        let expected = try model.forward(tokens, sequence: whole, outputs: .last, workspace: Workspace())
        let split = model.makeSequence()
        let workspace = Workspace()
        _ = try model.forward(Array(tokens[..<prefix]), sequence: split, outputs: .none, workspace: workspace)
        let got = try model.forward(Array(tokens[prefix...]), sequence: split, outputs: .last, workspace: workspace)
        // Compare as Bool: Swift Testing would diff the huge arrays element by element.
        if prefix % 256 == 0 {
            let sameLogits = got == expected
            #expect(sameLogits, "largest logit difference \(maxDifference(got, expected))")
            let sameKV = try split.exportKV(0..<total) == whole.exportKV(0..<total)
            #expect(sameKV)
        } else {
            // The single-token tail runs the int8 decode kernels instead of Float sgemm.
            #expect(maxDifference(got, expected) < 1.5)
        }
    }

    @Test("export → import into a fresh sequence, then continuing, gives identical logits")
    func exportImport() throws {
        let model = try TestModel.model()
        let tokens = sampleTokens(300, seed: 7)
        let source = model.makeSequence()
        let workspace = Workspace()
        _ = try model.forward(Array(tokens[..<256]), sequence: source, outputs: .none, workspace: workspace)
        let bytes = try source.exportKV(0..<256)
        #expect(bytes.count == model.kvLayout.byteCount(tokens: 256))
        let expected = try model.forward(Array(tokens[256...]), sequence: source, outputs: .all, workspace: workspace)

        let copy = model.makeSequence()
        try copy.importKV(bytes, tokens: Array(tokens[..<256]), at: 0)
        #expect(copy.tokens == Array(tokens[..<256]))
        let got = try model.forward(Array(tokens[256...]), sequence: copy, outputs: .all, workspace: Workspace())
        let same = got == expected
        #expect(same, "largest logit difference \(maxDifference(got, expected))")
    }

    @Test("a copied prefix shares its full pages; a write into a shared page copies the page first")
    func sharedPages() throws {
        let model = try TestModel.model()
        let workspace = Workspace()
        let tokens = sampleTokens(560, seed: 11)
        let (other, another) = (sampleTokens(40, seed: 12), sampleTokens(30, seed: 13))
        /// What a sequence holds after computing `tokens`, cutting back to `cut` and computing `next`.
        func computed(cut: Int, next: [Int32]) throws -> (kv: SequenceKV, logits: [Float]) {
            let kv = model.makeSequence()
            _ = try model.forward(tokens, sequence: kv, outputs: .none, workspace: workspace)
            kv.truncate(to: cut)
            return (kv, try model.forward(next, sequence: kv, outputs: .last, workspace: workspace))
        }
        let source = model.makeSequence()
        _ = try model.forward(tokens, sequence: source, outputs: .none, workspace: workspace)
        let copy = model.makeSequence()
        try copy.copyPrefix(of: source, count: 530)
        #expect(copy.sharedPageCount == 2 && source.sharedPageCount == 2)
        #expect(copy.tokens == Array(tokens[..<530]))

        // The copy goes on in its own third page; the source cuts back into the second page, shared,
        // which it copies (its first 44 rows) before writing.
        let copyLogits = try model.forward(other, sequence: copy, outputs: .last, workspace: workspace)
        source.truncate(to: 300)
        let sourceLogits = try model.forward(another, sequence: source, outputs: .last, workspace: workspace)
        #expect(copy.sharedPageCount == 1 && source.sharedPageCount == 1)

        let copyAlone = try computed(cut: 530, next: other)
        let sourceAlone = try computed(cut: 300, next: another)
        let sameCopy = try copyLogits == copyAlone.logits && copy.exportKV(0..<570) == copyAlone.kv.exportKV(0..<570)
        let sameSource =
            try sourceLogits == sourceAlone.logits && source.exportKV(0..<330) == sourceAlone.kv.exportKV(0..<330)
        #expect(sameCopy, "largest logit difference \(maxDifference(copyLogits, copyAlone.logits))")
        #expect(sameSource, "largest logit difference \(maxDifference(sourceLogits, sourceAlone.logits))")
    }

    @Test("pages recycled from another prompt give the logits and KV of fresh pages, computed or loaded")
    func recycledPages() throws {
        let model = try TestModel.model()
        let workspace = Workspace()
        let pageBytes = model.kvLayout.byteCount(tokens: 256)
        let free = FreeKVPages(limit: 4 * pageBytes)
        func sequence() -> SequenceKV {
            let kv = model.makeSequence()
            kv.freePages = free
            return kv
        }
        // A sequence on the list after another prompt's sequence gave its pages back.
        func recycled(_ stale: [Int32]) throws -> SequenceKV {
            _ = try model.forward(stale, sequence: sequence(), outputs: .none, workspace: workspace)
            return sequence()
        }
        let prompt = sampleTokens(800, seed: 21)

        // Computed: a prompt into four pages of another prompt's rows.
        let fresh = model.makeSequence()
        let expected = try model.forward(prompt, sequence: fresh, outputs: .last, workspace: workspace)
        do {
            let computed = try recycled(sampleTokens(1000, seed: 22))
            #expect(free.count == 4)
            let got = try model.forward(prompt, sequence: computed, outputs: .last, workspace: workspace)
            #expect(free.count == 0)
            let same = try got == expected && computed.exportKV(0..<800) == fresh.exportKV(0..<800)
            #expect(same, "largest logit difference \(maxDifference(got, expected))")
        }
        #expect(free.count == 4)

        // Loaded as a cache hit loads it: the full-attention layers for every position, the sliding-window
        // layers only for the window of the next token (rows before it keep the other prompt's bytes).
        let windows = model.attentionWindows
        let full = windows.indices.filter { windows[$0] == 0 }
        let windowed = windows.indices.filter { windows[$0] > 0 }
        try #require(!full.isEmpty && !windowed.isEmpty, "the test model has both kinds of layer")
        let source = model.makeSequence()
        _ = try model.forward(Array(prompt[..<768]), sequence: source, outputs: .none, workspace: workspace)
        let continued = try model.forward(Array(prompt[768...]), sequence: source, outputs: .last, workspace: workspace)
        let loaded = try recycled(sampleTokens(1000, seed: 23))
        func part(_ layers: [Int], _ range: Range<Int>) throws -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: layers.count * 2 * range.count * model.kvLayout.rowElements * 4)
            try bytes.withUnsafeMutableBytes { try source.exportKV(range, layers: layers, into: $0) }
            return bytes
        }
        try part(full, 0..<768).withUnsafeBytes { try loaded.importKV($0, layers: full, positions: 0..<768) }
        try part(windowed, 256..<768).withUnsafeBytes { try loaded.importKV($0, layers: windowed, positions: 256..<768) }
        try loaded.assumeTokens(Array(prompt[..<768]), partialLayers: windowed, from: 256)
        let gotLoaded = try model.forward(Array(prompt[768...]), sequence: loaded, outputs: .last, workspace: workspace)
        let sameLoaded = gotLoaded == continued
        #expect(sameLoaded, "largest logit difference \(maxDifference(gotLoaded, continued))")

        // Beyond its limit the list unmaps what it is given: six pages back, four kept.
        _ = try recycled(sampleTokens(1500, seed: 24))
        #expect(free.count == 4)
    }

    @Test("the export layout is layers × {K,V} × tokens × kv_heads × head_dim")
    func exportLayout() throws {
        let layout = KVLayout.engine(layers: 2, kvHeads: 1, headDim: 4)
        let kv = SequenceKV(layout: layout, pageSize: 2, capacity: 8)
        // Fill three tokens through import with recognisable values: value = layer·1000 + kv·100 + token·10 + i.
        var floats: [Float] = []
        for layer in 0..<2 {
            for part in 0..<2 {
                for token in 0..<3 {
                    for i in 0..<4 { floats.append(Float(layer * 1000 + part * 100 + token * 10 + i)) }
                }
            }
        }
        let bytes = floats.withUnsafeBytes { Array($0) }
        try kv.importKV(bytes, tokens: [5, 6, 7], at: 0)
        // A sub-range comes back in the same layout.
        let sub = try kv.exportKV(1..<3).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        var expected: [Float] = []
        for layer in 0..<2 {
            for part in 0..<2 {
                for token in 1..<3 {
                    for i in 0..<4 { expected.append(Float(layer * 1000 + part * 100 + token * 10 + i)) }
                }
            }
        }
        #expect(sub == expected)
    }

    @Test("bad ranges and byte counts throw")
    func rejectsBadInput() throws {
        let kv = SequenceKV(layout: KVLayout.engine(layers: 1, kvHeads: 1, headDim: 2), pageSize: 4, capacity: 8)
        #expect(throws: InferenceError.self) { try kv.exportKV(0..<1) }
        #expect(throws: InferenceError.self) { try kv.importKV([0, 0, 0], tokens: [1], at: 0) }
        #expect(throws: InferenceError.self) { try kv.importKV([UInt8](repeating: 0, count: 16), tokens: [1], at: 1) }
        #expect(throws: InferenceError.self) {
            try kv.importKV([UInt8](repeating: 0, count: 16 * 9), tokens: Array(repeating: 1, count: 9), at: 0)
        }
    }

    @Test("token ids outside the vocabulary and empty batches throw")
    func rejectsBadTokens() throws {
        let model = try TestModel.model()
        let kv = model.makeSequence()
        #expect(throws: InferenceError.self) { try model.forward([], sequence: kv, outputs: .last, workspace: Workspace()) }
        #expect(throws: InferenceError.self) {
            try model.forward([Int32(model.configuration.vocabularySize)], sequence: kv, outputs: .last, workspace: Workspace())
        }
        #expect(kv.count == 0)
    }
}
