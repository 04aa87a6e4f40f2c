// The request and response bodies of OpenAI's completions and chat completions APIs, as far as this
// server implements them. JSON names are kept in `CodingKeys` only.

/// A string or an array of strings (`prompt`, `stop`).
struct OneOrMany: Decodable, Sendable, Hashable {
    var values: [String]

    init(from decoder: any Decoder) throws {
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
struct JSONInteger: Decodable, Sendable, Hashable {
    var value: Int?

    init(from decoder: any Decoder) throws {
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
    func checked(_ field: String, in range: ClosedRange<Int>) throws(APIError) -> Int {
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
struct JSONSeed: Decodable, Sendable, Hashable {
    var value: UInt64?

    /// The message of a seed out of range.
    static let range = "seed must be an integer between \(Int64.min) and \(UInt64.max)"

    init(from decoder: any Decoder) throws {
        // A number, else a type mismatch; past `Int.max`, perhaps still a `UInt64`.
        if let signed = try JSONInteger(from: decoder).value {
            value = UInt64(bitPattern: Int64(signed))
        } else {
            value = try? decoder.singleValueContainer().decode(UInt64.self)
        }
    }
}

/// `stream_options`.
struct StreamOptions: Decodable, Sendable, Hashable {
    var includeUsage: Bool?

    enum CodingKeys: String, CodingKey {
        case includeUsage = "include_usage"
    }
}

/// The fields completions and chat completions share. Numbers are kept as sent (`Double`,
/// ``JSONInteger``), so that the server checks their ranges and names the field that is out of range.
protocol GenerationFields {
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
struct CompletionRequest: Decodable, Sendable, GenerationFields {
    var model: String?
    var prompt: OneOrMany
    var maxTokens: JSONInteger?
    var temperature: Double?
    var topP: Double?
    var topK: JSONInteger?
    var seed: JSONSeed?
    var stop: OneOrMany?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var n: JSONInteger?
    var cacheSalt: String?
    /// How many most likely tokens to report per position; log probabilities are not computed, so any
    /// value but `null` is refused.
    var logprobs: JSONInteger?

    var lengthLimit: (field: String, value: JSONInteger)? { maxTokens.map { ("max_tokens", $0) } }

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
struct ChatMessage: Codable, Sendable, Hashable {
    var role: String
    var content: MessageContent?
}

/// A message's content: a string, or an array of text parts (`{"type": "text", "text": …}`), joined.
/// Other parts (images, audio) are refused rather than dropped: the model reads text only.
struct MessageContent: Codable, Sendable, Hashable {
    var text: String

    init(_ text: String) { self.text = text }

    init(from decoder: any Decoder) throws {
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

    func encode(to encoder: any Encoder) throws {
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
struct ChatCompletionRequest: Decodable, Sendable, GenerationFields {
    var model: String?
    var messages: [ChatMessage]
    var maxTokens: JSONInteger?
    var maxCompletionTokens: JSONInteger?
    var temperature: Double?
    var topP: Double?
    var topK: JSONInteger?
    var seed: JSONSeed?
    var stop: OneOrMany?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var n: JSONInteger?
    var cacheSalt: String?
    /// Whether to report log probabilities: they are not computed, so `true` is refused.
    var logprobs: Bool?
    /// How many most likely tokens to report per position: refused above 0, as `logprobs` is.
    var topLogprobs: JSONInteger?

    var lengthLimit: (field: String, value: JSONInteger)? {
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

/// `usage`, with how many prompt tokens were loaded from the cache.
struct Usage: Encodable, Sendable, Hashable {
    var promptTokens: Int
    var completionTokens: Int
    var totalTokens: Int { promptTokens + completionTokens }
    var cachedTokens: Int

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case totalTokens = "total_tokens"
        case promptTokensDetails = "prompt_tokens_details"
    }

    struct Details: Encodable {
        var cachedTokens: Int
        enum CodingKeys: String, CodingKey { case cachedTokens = "cached_tokens" }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(promptTokens, forKey: .promptTokens)
        try container.encode(completionTokens, forKey: .completionTokens)
        try container.encode(totalTokens, forKey: .totalTokens)
        try container.encode(Details(cachedTokens: cachedTokens), forKey: .promptTokensDetails)
    }
}

/// One choice of a text completion (whole, or one streamed piece).
struct CompletionChoice: Encodable, Sendable {
    var index = 0
    var text: String
    var finishReason: String?

    enum CodingKeys: String, CodingKey {
        case index, text, logprobs
        case finishReason = "finish_reason"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(index, forKey: .index)
        try container.encode(text, forKey: .text)
        try container.encodeNil(forKey: .logprobs)
        try container.encode(finishReason, forKey: .finishReason)
    }
}

/// A text completion, or one chunk of a streamed one (`object` says which).
struct CompletionResponse: Encodable, Sendable {
    var id: String
    var object = "text_completion"
    var created: Int
    var model: String
    var choices: [CompletionChoice]
    var usage: Usage?
}

/// The message or delta of a chat choice.
struct ChatDelta: Encodable, Sendable {
    var role: String?
    var content: String?
}

/// One choice of a chat completion: a `message`, or a streamed `delta`.
struct ChatChoice: Encodable, Sendable {
    var index = 0
    var message: ChatDelta?
    var delta: ChatDelta?
    var finishReason: String?

    enum CodingKeys: String, CodingKey {
        case index, message, delta, logprobs
        case finishReason = "finish_reason"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(index, forKey: .index)
        try container.encodeIfPresent(message, forKey: .message)
        try container.encodeIfPresent(delta, forKey: .delta)
        try container.encodeNil(forKey: .logprobs)
        try container.encode(finishReason, forKey: .finishReason)
    }
}

/// A chat completion (`chat.completion`) or one chunk of a streamed one (`chat.completion.chunk`).
struct ChatCompletionResponse: Encodable, Sendable {
    var id: String
    var object: String
    var created: Int
    var model: String
    var choices: [ChatChoice]
    var usage: Usage?
}

/// `GET /v1/models`.
struct ModelList: Encodable, Sendable {
    struct Model: Encodable, Sendable {
        var id: String
        var object = "model"
        var created: Int
        var ownedBy = "lmcache"
        var maxModelLength: Int

        enum CodingKeys: String, CodingKey {
            case id, object, created
            case ownedBy = "owned_by"
            case maxModelLength = "max_model_len"
        }
    }

    var object = "list"
    var data: [Model]
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
struct ErrorBody: Encodable, Sendable {
    struct Detail: Encodable, Sendable {
        var message: String
        var type: String
        var param: String?
        var code: String?

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(message, forKey: .message)
            try container.encode(type, forKey: .type)
            try container.encode(param, forKey: .param)
            try container.encode(code, forKey: .code)
        }

        enum CodingKeys: String, CodingKey { case message, type, param, code }
    }

    var error: Detail
}
