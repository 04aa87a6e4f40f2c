public import GGUF

/// Builds the tokenizer that a GGUF file describes.
///
/// `tokenizer.ggml.model` selects the kind: `llama` gives a ``SentencePieceTokenizer``, `gpt2` a
/// ``BytePairTokenizer`` (byte-level BPE with the pre-tokenizer named by `tokenizer.ggml.pre`).
///
/// ```swift
/// let tokenizer = try makeTokenizer(from: GGUFFile(contentsOf: path))
/// ```
/// - Parameter file: An open model file.
/// - Returns: The tokenizer.
/// - Throws: ``TokenizerError`` when the metadata is missing, malformed or names an unsupported kind.
public func makeTokenizer(from file: GGUFFile) throws(TokenizerError) -> any Tokenizer {
    guard let model = file.string("tokenizer.ggml.model") else {
        throw TokenizerError(.missingKey, "'tokenizer.ggml.model' is missing")
    }
    switch model {
    case "llama":
        return try SentencePieceTokenizer(file: file)
    case "gpt2":
        return try BytePairTokenizer(file: file)
    default:
        throw TokenizerError(.unsupportedModel, "tokenizer model '\(model)' is not supported (llama, gpt2 are)")
    }
}
