// The request and response bodies of OpenAI's completions and chat completions APIs, as far as this
// server implements them. JSON names are kept in `CodingKeys` only.

/// A string or an array of strings (`prompt`, `stop`).
struct OneOrMany: Decodable, Sendable, Hashable {
    var values: [String]

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let one = try? container.decode(String.self) {
            values = [one]
        } else {
            values = try container.decode([String].self)
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

/// The fields completions and chat completions share.
protocol GenerationFields {
    var model: String? { get }
    var maxTokens: Int? { get }
    var temperature: Float? { get }
    var topP: Float? { get }
    var topK: Int? { get }
    var seed: UInt64? { get }
    var stop: OneOrMany? { get }
    var stream: Bool? { get }
    var streamOptions: StreamOptions? { get }
    var n: Int? { get }
    var cacheSalt: String? { get }
    /// `logprobs` (completions: a count; chat: a flag), refused when asked for: it is not computed.
    var logprobs: Requested? { get }
}

/// A JSON value that asks for something when it is `true` or a positive number (`false`, 0 and `null`
/// do not).
struct Requested: Decodable, Sendable, Hashable {
    var isRequested: Bool

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            isRequested = false
        } else if let flag = try? container.decode(Bool.self) {
            isRequested = flag
        } else {
            isRequested = try container.decode(Double.self) > 0
        }
    }
}

/// `POST /v1/completions` body.
struct CompletionRequest: Decodable, Sendable, GenerationFields {
    var model: String?
    var prompt: OneOrMany
    var maxTokens: Int?
    var temperature: Float?
    var topP: Float?
    var topK: Int?
    var seed: UInt64?
    var stop: OneOrMany?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var n: Int?
    var cacheSalt: String?
    var logprobs: Requested?

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

/// A message's content: a string, or an array of parts of which the text parts are used.
struct MessageContent: Codable, Sendable, Hashable {
    var text: String

    init(_ text: String) { self.text = text }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self.text = text
            return
        }
        struct Part: Decodable {
            var type: String
            var text: String?
        }
        let parts = try container.decode([Part].self)
        text = parts.compactMap { $0.type == "text" ? $0.text : nil }.joined()
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }
}

/// `POST /v1/chat/completions` body.
struct ChatCompletionRequest: Decodable, Sendable, GenerationFields {
    var model: String?
    var messages: [ChatMessage]
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var temperature: Float?
    var topP: Float?
    var topK: Int?
    var seed: UInt64?
    var stop: OneOrMany?
    var stream: Bool?
    var streamOptions: StreamOptions?
    var n: Int?
    var cacheSalt: String?
    var logprobs: Requested?
    var topLogprobs: Requested?

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
