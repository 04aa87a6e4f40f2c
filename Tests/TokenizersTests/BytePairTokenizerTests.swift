import Foundation
import GGUF
import Testing
import Tokenizers

/// The tokenizer-only BPE fixtures (made by scripts/reference/make_tiny_models.py).
enum TinyBPE {
    static func tokenizer(_ name: String) throws -> any Tokenizer {
        guard let url = Bundle.module.url(forResource: name, withExtension: "gguf", subdirectory: "Resources") else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: "Resources/\(name).gguf"])
        }
        return try makeTokenizer(from: GGUFFile(contentsOf: url.path))
    }

    static let llama3Cases: [TokenizerCase] = (try? TokenizerReference.load("tiny-bpe-llama3-tokenizer").cases) ?? []
    static let qwen2Cases: [TokenizerCase] = (try? TokenizerReference.load("tiny-bpe-qwen2-tokenizer").cases) ?? []
}

@Suite("Byte-level BPE tokenizer against llama.cpp")
struct BytePairTokenizerTests {
    @Test("reference data is present")
    func referencePresent() {
        #expect(TinyBPE.llama3Cases.count >= 30)
        #expect(TinyBPE.qwen2Cases.count >= 30)
    }

    @Test("Llama 3 pre-tokenizer: encodes like llama.cpp", arguments: TinyBPE.llama3Cases)
    func llama3(_ reference: TokenizerCase) throws {
        let tokenizer = try TinyBPE.tokenizer("tiny-bpe-llama3")
        let ids = tokenizer.encode(
            reference.text,
            addSpecial: reference.addSpecial,
            parseSpecial: reference.parseSpecial
        )
        #expect(ids == reference.ids)
        if let pieces = reference.pieces {
            #expect(reference.ids.map { tokenizer.piece($0) } == pieces)
        }
        if let decoded = reference.decoded {
            #expect(tokenizer.decode(reference.ids) == decoded)
        }
        let plain = tokenizer.encode(reference.text, addSpecial: false, parseSpecial: reference.parseSpecial)
        #expect(tokenizer.decode(plain, renderSpecial: reference.parseSpecial) == reference.text)
    }

    @Test("Qwen2 pre-tokenizer: encodes like llama.cpp", arguments: TinyBPE.qwen2Cases)
    func qwen2(_ reference: TokenizerCase) throws {
        let tokenizer = try TinyBPE.tokenizer("tiny-bpe-qwen2")
        let ids = tokenizer.encode(
            reference.text,
            addSpecial: reference.addSpecial,
            parseSpecial: reference.parseSpecial
        )
        #expect(ids == reference.ids)
        if let pieces = reference.pieces {
            #expect(reference.ids.map { tokenizer.piece($0) } == pieces)
        }
        if let decoded = reference.decoded {
            #expect(tokenizer.decode(reference.ids) == decoded)
        }
    }

    @Test("special ids of the BPE fixtures")
    func specialIDs() throws {
        let llama3 = try TinyBPE.tokenizer("tiny-bpe-llama3")
        let bos = try #require(llama3.bosID)
        #expect(llama3.piece(bos) == "<|begin_of_text|>")
        #expect(llama3.addsBOS)
        #expect(llama3.encode("Hi", addSpecial: true, parseSpecial: false).first == bos)
        let eot = llama3.encode("<|eot_id|>", addSpecial: false, parseSpecial: true)
        #expect(eot.count == 1)
        #expect(llama3.isEndOfGeneration(eot[0]))
        let qwen2 = try TinyBPE.tokenizer("tiny-bpe-qwen2")
        #expect(!qwen2.addsBOS)
        #expect(qwen2.encode("Hi", addSpecial: true, parseSpecial: false).first != qwen2.bosID)
    }

    @Test("streaming decoding joins characters split across byte tokens")
    func streaming() throws {
        let tokenizer = try TinyBPE.tokenizer("tiny-bpe-llama3")
        let text = "日本語 🤖 naïve"
        let ids = tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        #expect(ids.count > text.unicodeScalars.count)  // multi-byte characters are several tokens
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in ids { pieces.append(decoder.append(id)) }
        pieces.append(decoder.finish())
        #expect(pieces.joined() == text)
        #expect(!pieces.contains { $0.contains("\u{FFFD}") })
    }
}
