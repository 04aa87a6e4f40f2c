// The request bodies of OpenAI's completions and chat completions APIs, as far as this server
// implements them. JSON names are kept in `CodingKeys` only.

/// A string or an array of strings (`prompt`, `stop`).
package struct OneOrMany: Decodable, Sendable, Hashable {
    package var values: [String]

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let one = try? container.decode(String.self) {
            values = [one]
        } else if (try? decoder.unkeyedContainer()) != nil {
            // An array: an element of the wrong type is named by its index.
            values = try container.decode([String].self)
        } else {
            throw DecodingError.typeMismatch(
                Self.self,
                .init(codingPath: decoder.codingPath, debugDescription: "a string or an array of strings")
            )
        }
    }
}

/// A JSON number given for an integer field.
///
/// `value` is the integer when the number is a whole number that fits an `Int`, and `nil` when it is a
/// fraction or out of range (`1e308`): such a request is still valid JSON, and the field's range check
/// names the field and its range rather than the whole body failing to decode. Anything but a number
/// fails to decode as a type mismatch at the field.
package struct JSONInteger: Decodable, Sendable, Hashable {
    package var value: Int?

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Int.self) {
            self.value = value
        } else if (try? container.decode(Double.self)) != nil {
            value = nil
        } else {
            throw DecodingError.typeMismatch(
                Int.self,
                .init(codingPath: decoder.codingPath, debugDescription: "an integer")
            )
        }
    }

    /// The value when it is in `range`.
    /// - Throws: an error naming `field` and the range, for a number outside it.
    package func checked(_ field: String, in range: ClosedRange<Int>) throws(APIError) -> Int {
        guard let value, range.contains(value) else {
            throw APIError(
                message: "\(field) must be an integer between \(range.lowerBound) and \(range.upperBound)",
                param: field
            )
        }
        return value
    }
}

/// `seed`: any integer from `Int64.min` (as vLLM accepts) to `UInt64.max`; a negative seed is used as its
/// two's-complement bit pattern. `value` is `nil` for a fraction or a number out of that range.
package struct JSONSeed: Decodable, Sendable, Hashable {
    package var value: UInt64?

    /// The message of a seed out of range.
    package static let range = "seed must be an integer between \(Int64.min) and \(UInt64.max)"

    package init(from decoder: any Decoder) throws {
        // A number, else a type mismatch; past `Int.max`, perhaps still a `UInt64`.
        if let signed = try JSONInteger(from: decoder).value {
            value = UInt64(bitPattern: Int64(signed))
        } else {
            value = try? decoder.singleValueContainer().decode(UInt64.self)
        }
    }
}

/// `stream_options`.
package struct StreamOptions: Decodable, Sendable, Hashable {
    package var includeUsage: Bool?

    enum CodingKeys: String, CodingKey {
        case includeUsage = "include_usage"
    }
}

/// The fields completions and chat completions share. Numbers are kept as sent (`Double`,
/// ``JSONInteger``), so that the server checks their ranges and names the field that is out of range.
package protocol GenerationFields {
    var model: String? { get }
    /// The field that limits the completion's length, when the request has one: `max_tokens`, or for chat
    /// `max_completion_tokens` (which wins when both are sent).
    var lengthLimit: (field: String, value: JSONInteger)? { get }
    var temperature: Double? { get }
    var topP: Double? { get }
    var topK: JSONInteger? { get }
    var seed: JSONSeed? { get }
    var stop: OneOrMany? { get }
    var stream: Bool? { get }
    var streamOptions: StreamOptions? { get }
    var n: JSONInteger? { get }
    var cacheSalt: String? { get }
}

/// `POST /v1/completions` body.
package struct CompletionRequest: Decodable, Sendable, GenerationFields {
    package var model: String?
    package var prompt: OneOrMany
    package var maxTokens: JSONInteger?
    package var temperature: Double?
    package var topP: Double?
    package var topK: JSONInteger?
    package var seed: JSONSeed?
    package var stop: OneOrMany?
    package var stream: Bool?
    package var streamOptions: StreamOptions?
    package var n: JSONInteger?
    package var cacheSalt: String?
    /// How many most likely tokens to report per position; log probabilities are not computed, so any
    /// value but `null` is refused.
    package var logprobs: JSONInteger?

    package var lengthLimit: (field: String, value: JSONInteger)? { maxTokens.map { ("max_tokens", $0) } }

    enum CodingKeys: String, CodingKey {
        case model, prompt, temperature, seed, stop, stream, n, logprobs
        case maxTokens = "max_tokens"
        case topP = "top_p"
        case topK = "top_k"
        case streamOptions = "stream_options"
        case cacheSalt = "cache_salt"
    }
}

/// One message of a chat.
package struct ChatMessage: Codable, Sendable, Hashable {
    package var role: String
    package var content: MessageContent?

    package init(role: String, content: MessageContent?) {
        self.role = role
        self.content = content
    }
}

/// A message's content: a string, or an array of text parts (`{"type": "text", "text": …}`), joined.
/// Other parts (images, audio) are refused rather than dropped: the model reads text only.
package struct MessageContent: Codable, Sendable, Hashable {
    package var text: String

    package init(_ text: String) { self.text = text }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self.text = text
            return
        }
        guard var parts = try? decoder.unkeyedContainer() else {
            throw DecodingError.typeMismatch(
                Self.self,
                .init(codingPath: decoder.codingPath, debugDescription: "a string or an array of text parts")
            )
        }
        struct Part: Decodable {
            var type: String
            var text: String?
        }
        var texts: [String] = []
        while !parts.isAtEnd {
            let path = parts.codingPath + [PartIndex(intValue: parts.currentIndex)]
            let part = try parts.decode(Part.self)
            guard part.type == "text", let text = part.text else {
                throw DecodingError.dataCorrupted(
                    .init(
                        codingPath: path,
                        debugDescription: "a part of type '\(part.type)' is not supported (text parts only)"
                    )
                )
            }
            texts.append(text)
        }
        text = texts.joined()
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }

    /// An array index in a coding path.
    private struct PartIndex: CodingKey {
        var intValue: Int?
        var stringValue: String { "Index \(intValue ?? 0)" }
        init(intValue: Int) { self.intValue = intValue }
        init?(stringValue: String) { nil }
    }
}

/// `POST /v1/chat/completions` body.
package struct ChatCompletionRequest: Decodable, Sendable, GenerationFields {
    package var model: String?
    package var messages: [ChatMessage]
    package var maxTokens: JSONInteger?
    package var maxCompletionTokens: JSONInteger?
    package var temperature: Double?
    package var topP: Double?
    package var topK: JSONInteger?
    package var seed: JSONSeed?
    package var stop: OneOrMany?
    package var stream: Bool?
    package var streamOptions: StreamOptions?
    package var n: JSONInteger?
    package var cacheSalt: String?
    /// Whether to report log probabilities: they are not computed, so `true` is refused.
    package var logprobs: Bool?
    /// How many most likely tokens to report per position: refused above 0, as `logprobs` is.
    package var topLogprobs: JSONInteger?

    package var lengthLimit: (field: String, value: JSONInteger)? {
        maxCompletionTokens.map { ("max_completion_tokens", $0) } ?? maxTokens.map { ("max_tokens", $0) }
    }

    enum CodingKeys: String, CodingKey {
        case model, messages, temperature, seed, stop, stream, n, logprobs
        case topLogprobs = "top_logprobs"
        case maxTokens = "max_tokens"
        case maxCompletionTokens = "max_completion_tokens"
        case topP = "top_p"
        case topK = "top_k"
        case streamOptions = "stream_options"
        case cacheSalt = "cache_salt"
    }
}

