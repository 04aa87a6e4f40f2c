import Foundation
import GGUF
import LMCacheTestSupport
import Testing
import Tokenizers

/// The Gemma 3 tokenizer, built once from the default model.
enum Gemma3 {
    static let tokenizer: Result<any Tokenizer, any Error> = Result {
        try makeTokenizer(from: GGUFFile(contentsOf: TestModel.requirePath()))
    }

    static func require() throws -> any Tokenizer { try tokenizer.get() }
}

@Suite("Gemma 3 tokenizer against llama.cpp")
struct Gemma3TokenizerTests {
    @Test("reference data is present")
    func referencePresent() throws {
        #expect(TokenizerReference.gemma3.count >= 12)
    }

    @Test("encodes like llama.cpp", arguments: TokenizerReference.gemma3)
    func encodes(_ reference: TokenizerCase) throws {
        let tokenizer = try Gemma3.require()
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

    @Test("decodes its own encoding back to the text", arguments: TokenizerReference.gemma3)
    func roundTrips(_ reference: TokenizerCase) throws {
        let tokenizer = try Gemma3.require()
        let ids = tokenizer.encode(reference.text, addSpecial: false, parseSpecial: reference.parseSpecial)
        #expect(tokenizer.decode(ids, renderSpecial: true) == reference.text)
    }

    @Test("special ids and flags come from the file")
    func specialIDs() throws {
        let tokenizer = try Gemma3.require()
        #expect(tokenizer.vocabularySize == 262_144)
        #expect(tokenizer.bosID == 2)
        #expect(tokenizer.eosID == 1)
        #expect(tokenizer.paddingID == 0)
        #expect(tokenizer.unknownID == 3)
        #expect(tokenizer.addsBOS)
        #expect(!tokenizer.addsEOS)
        #expect(tokenizer.isEndOfGeneration(1))
        #expect(tokenizer.isEndOfGeneration(106))  // <end_of_turn>
        #expect(!tokenizer.isEndOfGeneration(2))
        #expect(tokenizer.piece(2) == "<bos>")
        #expect(tokenizer.decode([2, 9259, 1902]) == "Hello world")
        #expect(tokenizer.decode([2, 9259, 1902], renderSpecial: true) == "<bos>Hello world")
        #expect(tokenizer.decode([-1, 1 << 30]).isEmpty)
    }

    @Test("streaming decoding holds back split UTF-8 characters")
    func streaming() throws {
        let tokenizer = try Gemma3.require()
        // "🦀" is not a token: it falls back to four byte tokens.
        let text = "crab 🦀 done ✓"
        let ids = tokenizer.encode(text, addSpecial: true, parseSpecial: false)
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in ids { pieces.append(decoder.append(id)) }
        pieces.append(decoder.finish())
        #expect(pieces.joined() == text)
        #expect(!pieces.contains { $0.contains("\u{FFFD}") })
    }

    @Test("a long prompt encodes quickly and round-trips")
    func longPrompt() throws {
        let tokenizer = try Gemma3.require()
        let paragraph = """
            The quick brown fox jumps over the lazy dog; meanwhile, 42 engineers wrote Swift code \
            (func main() { print("hi") }) and 日本語のテキスト, naïve café résumé — emoji 🤖🚀.\n\n
            """
        let text = String(repeating: paragraph, count: 700)
        let clock = ContinuousClock()
        var ids: [Int32] = []
        let elapsed = clock.measure { ids = tokenizer.encode(text, addSpecial: false, parseSpecial: false) }
        #expect(ids.count > 30_000)
        #expect(tokenizer.decode(ids) == text)
        // Generous bound for unoptimised test builds; release builds take a few tens of milliseconds.
        #expect(elapsed < .seconds(5), "encoding \(ids.count) tokens took \(elapsed)")
        print("encoded \(ids.count) tokens in \(elapsed)")
    }

    @Test("one tokenizer serves many tasks at once")
    func concurrentUse() async throws {
        let tokenizer = try Gemma3.require()
        let cases = TokenizerReference.gemma3
        let mismatches = await withTaskGroup(of: Int.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    var bad = 0
                    for (index, reference) in cases.enumerated() where index % 4 == worker {
                        let ids = tokenizer.encode(
                            reference.text,
                            addSpecial: reference.addSpecial,
                            parseSpecial: reference.parseSpecial
                        )
                        if ids != reference.ids { bad += 1 }
                    }
                    return bad
                }
            }
            return await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }
}
