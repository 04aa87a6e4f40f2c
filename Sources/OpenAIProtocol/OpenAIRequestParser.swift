package import Foundation

/// A client's mistake (or a server failure), sent as an OpenAI-style error body.
package struct APIError: Error, Sendable {
    /// The HTTP status code (400 unless said otherwise).
    package var status: Int
    package var message: String
    package var type: String
    package var param: String?
    package var code: String?
    /// Seconds after which the client may try again (the `Retry-After` header).
    package var retryAfter: Int?

    package init(
        status: Int = 400,
        message: String,
        type: String = "invalid_request_error",
        param: String? = nil,
        code: String? = nil,
        retryAfter: Int? = nil
    ) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }
}

/// What a request body asks for, checked the way the server answers it: each failure is an
/// ``APIError`` that names the field, never a crash and never a silently ignored field. The HTTP
/// layer only collects the body and maps the error to a response; the fuzz target
/// `openai-body` runs these same functions on hostile bytes.
///
/// ```swift
/// let body = try OpenAIRequestParser.decode(ChatCompletionRequest.self, from: data)
/// try OpenAIRequestParser.checkChat(body)
/// let parameters = try OpenAIRequestParser.parameters(body, maxModelLength: 32_768)
/// ```
package enum OpenAIRequestParser {
    /// The chat roles a request may use (`model` is Gemma's name for `assistant`).
    package static let chatRoles: Set<String> = ["system", "developer", "user", "assistant", "model"]

    /// Decodes a JSON body, then refuses the fields this server does not implement
    /// (``UnsupportedFields``).
    package static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws(APIError) -> T {
        do {
            let body = try JSONDecoder().decode(T.self, from: data)
            try UnsupportedFields.check(data)
            return body
        } catch let error as APIError {
            throw error
        } catch let error as DecodingError {
            throw describe(error, body: data)
        } catch {
            throw APIError(message: "invalid request body: \(error)")
        }
    }

    /// Refuses what a completions request asks for and the server cannot give: several prompts,
    /// log probabilities.
    package static func checkCompletion(_ body: CompletionRequest) throws(APIError) {
        guard body.prompt.values.count == 1 else {
            throw APIError(message: "exactly one prompt string is supported", param: "prompt")
        }
        if body.logprobs != nil { throw logprobsRefused("logprobs") }
    }

    /// Refuses an empty chat, a role the template does not know (it would be rendered as a user
    /// turn), and log probabilities.
    package static func checkChat(_ body: ChatCompletionRequest) throws(APIError) {
        guard !body.messages.isEmpty else { throw APIError(message: "messages must not be empty", param: "messages") }
        if let (index, message) = body.messages.enumerated().first(where: { !chatRoles.contains($0.element.role) }) {
            throw APIError(
                message: "messages[\(index)].role '\(message.role)' is not one of \(chatRoles.sorted().joined(separator: ", "))",
                param: "messages[\(index)].role")
        }
        if body.logprobs == true { throw logprobsRefused("logprobs") }
        if let top = body.topLogprobs, try top.checked("top_logprobs", in: 0...20) > 0 {
            throw logprobsRefused("top_logprobs")
        }
    }

    /// The error of a request for log probabilities, which the engine does not compute.
    package static func logprobsRefused(_ field: String) -> APIError {
        APIError(
            message: "\(field) is not supported: this server does not compute log probabilities (omit the field)",
            param: field
        )
    }

    /// The sampling and length fields of a request, each checked against its range; the length
    /// limit against `1...maxModelLength` (the prompt's own length is checked once it is tokenized).
    package static func parameters(
        _ body: some GenerationFields,
        maxModelLength: Int
    ) throws(APIError) -> GenerationParameters {
        if let n = body.n, n.value != 1 { throw APIError(message: "only n = 1 is supported", param: "n") }
        if let t = body.temperature, !(t >= 0 && t <= 2) {
            throw APIError(message: "temperature must be a number between 0 and 2", param: "temperature")
        }
        if let p = body.topP, !(p > 0 && p <= 1) {
            throw APIError(message: "top_p must be a number in (0, 1]", param: "top_p")
        }
        if let k = body.topK, (k.value ?? -2) < -1 {
            throw APIError(
                message: "top_k must be an integer: -1 or 0 (every token), or a positive count",
                param: "top_k"
            )
        }
        if let seed = body.seed, seed.value == nil { throw APIError(message: JSONSeed.range, param: "seed") }
        var limit: GenerationParameters.LengthLimit?
        if let (field, value) = body.lengthLimit {
            limit = .init(field: field, count: try value.checked(field, in: 1...maxModelLength))
        }
        return GenerationParameters(
            lengthLimit: limit,
            temperature: body.temperature ?? 1,
            topK: max(0, body.topK?.value ?? 0),
            topP: body.topP ?? 1,
            seed: body.seed?.value,
            stop: body.stop?.values.filter { !$0.isEmpty } ?? [],
            cacheSalt: body.cacheSalt
        )
    }

    /// The error naming the field that `error` is about; "malformed JSON" only for a body that is not JSON.
    private static func describe(_ error: DecodingError, body: Data) -> APIError {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.reduce(into: "") { path, key in
                if let index = key.intValue {
                    path += "[\(index)]"
                } else {
                    path += path.isEmpty ? key.stringValue : "." + key.stringValue
                }
            }
        }
        switch error {
        case .dataCorrupted(let context) where context.codingPath.isEmpty:
            // The decoder says only "not valid JSON", of syntax errors and of numbers that no Swift type
            // holds (1e400) alike; the parser's own message tells which.
            do {
                _ = try JSONSerialization.jsonObject(with: body, options: .fragmentsAllowed)
                return APIError(message: "invalid request body: \(context.debugDescription)")
            } catch {
                let detail = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? "\(error)"
                let kind = detail.hasPrefix("Number ") ? "invalid number" : "malformed JSON"
                return APIError(message: "\(kind): \(detail)")
            }
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            return APIError(message: "\(field): \(context.debugDescription)", param: field)
        case .keyNotFound(let key, let context):
            let field = path(context.codingPath + [key])
            return APIError(message: "\(field) is required", param: field)
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            guard !context.codingPath.isEmpty else {
                return APIError(message: "the request body must be a JSON object")
            }
            let field = path(context.codingPath)
            return APIError(message: "\(field) must be \(expectation(type, context))", param: field)
        @unknown default:
            return APIError(message: "invalid request body: \(error)")
        }
    }

    /// What a field of `type` must be, in words (`an integer`); a type of this module says it in its error.
    private static func expectation(_ type: Any.Type, _ context: DecodingError.Context) -> String {
        switch type {
        case is Bool.Type: "a boolean"
        case is any BinaryInteger.Type: "an integer"
        case is any BinaryFloatingPoint.Type: "a number"
        case is String.Type: "a string"
        case is [Any].Type: "an array"
        case is [String: Any].Type: "an object"
        default: context.debugDescription
        }
    }
}

/// The generation a request asks for, its fields checked (``OpenAIRequestParser/parameters(_:maxModelLength:)``).
package struct GenerationParameters: Sendable, Hashable {
    /// A length limit: the field that set it and its value.
    package struct LengthLimit: Sendable, Hashable {
        package var field: String
        package var count: Int

        package init(field: String, count: Int) {
            self.field = field
            self.count = count
        }
    }

    /// `max_tokens` or `max_completion_tokens`, when sent.
    package var lengthLimit: LengthLimit?
    package var temperature: Double
    /// 0: every token.
    package var topK: Int
    package var topP: Double
    /// `nil`: a random seed.
    package var seed: UInt64?
    /// Stop strings, empty ones dropped.
    package var stop: [String]
    package var cacheSalt: String?
}
