import Foundation
import Testing

/// One tokenizer case recorded from llama.cpp.
struct TokenizerCase: Decodable, CustomTestStringConvertible, Sendable {
    let text: String
    let addSpecial: Bool
    let parseSpecial: Bool
    let ids: [Int32]
    let pieces: [String]?
    /// llama.cpp's detokenization of `ids` without special tokens.
    let decoded: String?

    enum CodingKeys: String, CodingKey {
        case text
        case addSpecial = "add_special"
        case parseSpecial = "parse_special"
        case ids
        case pieces
        case decoded
    }

    var testDescription: String {
        let shown = text.count > 40 ? String(text.prefix(40)) + "…" : text
        return "\(shown.debugDescription) special=\(addSpecial) parse=\(parseSpecial)"
    }
}

/// The recorded tokenizer reference file.
struct TokenizerReference: Decodable {
    let cases: [TokenizerCase]

    static func load(_ name: String) throws -> TokenizerReference {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Resources") else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: "Resources/\(name).json"])
        }
        return try JSONDecoder().decode(TokenizerReference.self, from: Data(contentsOf: url))
    }

    /// The Gemma 3 cases, loaded once.
    static let gemma3: [TokenizerCase] = (try? load("gemma3-tokenizer").cases) ?? []
}
