internal import Foundation
internal import HTTPTypes
internal import OpenAIProtocol
public import Hummingbird
public import Inference
public import LMCacheStorage
public import Logging
internal import Synchronization
internal import Tokenizers

/// An OpenAI-compatible HTTP API over a ``ServingEngine`` (a ``GenerationEngine`` with the KV cache plugged in).
///
/// Routes:
/// - `POST /v1/completions` and `POST /v1/chat/completions`: `max_tokens`, `temperature`, `top_p`,
///   `top_k`, `seed`, `stop`, `stream` (server-sent events, each token sent as soon as it exists),
///   `stream_options.include_usage`, `n` = 1. `usage.prompt_tokens_details.cached_tokens` tells how
///   many prompt tokens were loaded from the cache.
/// - `GET /v1/models`, `GET /health`, `GET /metrics` (Prometheus text).
///
/// **Tenants.** A request's `cache_salt` field, or else its `X-Tenant-Id` header, salts its cache
/// keys: requests of different tenants never share cached KV; requests with neither share the
/// unsalted namespace.
///
/// **Validation**, as OpenAI and vLLM do it: a field of the wrong type or out of range is a 400 whose
/// `param` names it (`messages[1].role`, `max_tokens`); "malformed JSON" is only for a body that is not
/// JSON. Chat roles are `system`, `developer` (as `system`), `user` and `assistant` (or Gemma's `model`);
/// content is text (parts other than text are refused). `logprobs` and `top_logprobs` are refused when
/// they ask for anything: the engine does not compute log probabilities. So are the other fields that
/// would change the output and are not implemented (penalties, `logit_bias`, tools, `response_format`,
/// `best_of`, `echo`, `suffix`: ``UnsupportedFields``). An explicit `max_tokens` must
/// fit the context together with the prompt; without one a request generates at most
/// ``Configuration/maxTokensDefault`` tokens (16 for text completions, as OpenAI's default).
///
/// **Load.** At most the engine's running sequences plus ``Configuration/maxQueuedRequests`` requests
/// are admitted at once; the others get 503 (`code: queue_full`, `Retry-After: 1`) at once. With
/// ``Configuration/requestTimeout`` a request that runs longer is cancelled and gets 504
/// (`code: request_timeout`), or an error event that ends its stream.
///
/// Errors are OpenAI-style JSON bodies (`{"error": {"message", "type", "param", "code"}}`): 400 for
/// malformed JSON, bad parameters or a prompt longer than the context, 413 for an oversized body, 503
/// for a full server or a request that a shutdown cut short, 504 for a request past its timeout.
///
/// **Clients that go away.** A request whose client closes the connection is cancelled, streamed or
/// not: it leaves the engine's queue, or its sequence leaves the next engine step and frees its KV pages.
/// `lmcache_client_disconnects_total` counts them.
///
/// ```swift
/// let server = OpenAIServer(engine: engine, storage: manager, configuration: .init(modelName: "gemma-3-270m"))
/// try await server.run()   // until SIGINT or SIGTERM, then shuts down within `server.shutdownBound`
/// ```
public struct OpenAIServer: Sendable {
    /// Where and how to serve.
    public struct Configuration: Sendable, Hashable {
        /// Address to bind.
        public var host: String
        /// Port to bind (0: any free port).
        public var port: Int
        /// The model's name in `/v1/models` and responses.
        public var modelName: String
        /// The longest prompt plus completion, in tokens (`nil`: the model's context length).
        public var maxModelLength: Int?
        /// The largest request body accepted, bytes.
        public var maxRequestBytes: Int
        /// How long running requests may go on after a shutdown begins before they are cancelled.
        public var shutdownGrace: Duration
        /// The most tokens generated for a request that sets no `max_tokens` (nor `max_completion_tokens`):
        /// a chat completion generates up to this many, a text completion up to OpenAI's default of 16 (or
        /// this, when smaller). It keeps a client that forgets the field from holding the engine until the
        /// context is full. An explicit `max_tokens` is not limited by it.
        public var maxTokensDefault: Int
        /// The most requests that may wait for the engine on top of the ones it runs
        /// (``GenerationEngine/limits``' `maxSequences`): the server admits at most the sum at once and
        /// answers the others 503 with a `Retry-After` header at once, instead of queueing without bound.
        public var maxQueuedRequests: Int
        /// How long a request may take from its admission to its last token, queueing included (`nil`: no
        /// limit). One that takes longer is cancelled in the engine and answered 504 (an error event when
        /// streamed).
        public var requestTimeout: Duration?

        /// A configuration; defaults to `127.0.0.1:8000`.
        /// - Precondition: `maxTokensDefault` is at least 1, `maxQueuedRequests` at least 0, and
        ///   `requestTimeout`, when set, positive.
        public init(
            host: String = "127.0.0.1",
            port: Int = 8000,
            modelName: String,
            maxModelLength: Int? = nil,
            maxRequestBytes: Int = 16 << 20,
            shutdownGrace: Duration = .seconds(5),
            maxTokensDefault: Int = 256,
            maxQueuedRequests: Int = 64,
            requestTimeout: Duration? = nil
        ) {
            precondition(maxTokensDefault >= 1, "maxTokensDefault must be at least 1")
            precondition(maxQueuedRequests >= 0, "maxQueuedRequests must not be negative")
            precondition(requestTimeout.map { $0 > .zero } ?? true, "requestTimeout must be positive")
            self.host = host
            self.port = port
            self.modelName = modelName
            self.maxModelLength = maxModelLength
            self.maxRequestBytes = maxRequestBytes
            self.shutdownGrace = shutdownGrace
            self.maxTokensDefault = maxTokensDefault
            self.maxQueuedRequests = maxQueuedRequests
            self.requestTimeout = requestTimeout
        }
    }

    /// OpenAI's default `max_tokens` for text completions.
    static let completionsDefaultMaxTokens = 16

    /// The header that names a request's tenant when the body has no `cache_salt`.
    public static let tenantHeader = "X-Tenant-Id"

    /// The engine requests run on.
    public let engine: any ServingEngine
    /// The cache's storage, run alongside the server (write-behind) and reported in `/metrics`.
    public let storage: StorageManager?
    /// Settings.
    public let configuration: Configuration
    let logger: Logger
    let metrics = ServerMetrics()
    let template: ChatTemplate
    let created = Int(Date().timeIntervalSince1970)
    /// Set when a shutdown's grace period is over and the requests left are being cancelled.
    let aborting = Latch()

    /// A server over `engine`; `storage` is the manager behind its cache, if any (run and reported here).
    public init(
        engine: any ServingEngine,
        storage: StorageManager? = nil,
        configuration: Configuration,
        logger: Logger = Logger(label: "lmcache.serve")
    ) {
        self.engine = engine
        self.storage = storage
        self.configuration = configuration
        self.logger = logger
        self.template = ChatTemplate(architecture: engine.architecture)
    }

    /// The longest prompt plus completion, in tokens.
    public var maxModelLength: Int { min(configuration.maxModelLength ?? engine.contextLength, engine.contextLength) }

    /// The Hummingbird application; `onServerRunning` is called with the bound port.
    public func makeApplication(
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let router = Router(context: ServerContext.self)
        router.get("/health") { _, _ in Self.json(["status": "ok"]) }
        router.get("/v1/models") { _, _ in
            Self.json(
                ModelList(data: [
                    .init(id: configuration.modelName, created: created, maxModelLength: maxModelLength)
                ])
            )
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: metrics.render(storage: storage, engine: engine)))
            )
        }
        router.post("/v1/completions") { request, context in
            await respond(endpoint: "completions") {
                try await completions(request, clientGone: await context.clientGone)
            }
        }
        router.post("/v1/chat/completions") { request, context in
            await respond(endpoint: "chat_completions") {
                try await chatCompletions(request, clientGone: await context.clientGone)
            }
        }
        return Application(
            router: router,
            // Watches each connection, so that a request is cancelled when its client goes away.
            server: .http1(configuration: .init(additionalChannelHandlers: [InboundCloseHandler()])),
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.host, port: configuration.port),
                serverName: "lmcache"
            ),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? configuration.port) },
            logger: logger
        )
    }

    // MARK: Endpoints

    /// Runs `body`, turning ``APIError`` into OpenAI-style error responses and counting the outcome.
    private func respond(endpoint: String, _ body: () async throws -> Response) async -> Response {
        let response: Response
        do {
            response = try await body()
        } catch let error as APIError {
            response = Self.errorResponse(error)
        } catch is ClientGone {
            // Nobody reads this; counted under nginx's "client closed request".
            response = Response(status: .init(code: 499, reasonPhrase: "Client Closed Request"))
        } catch let error as InferenceError where error.isStopped {
            response = Self.errorResponse(Self.shuttingDown)
        } catch is CancellationError where aborting.isSet {
            response = Self.errorResponse(Self.shuttingDown)
        } catch let error as InferenceError {
            response = Self.errorResponse(Self.apiError(error))
        } catch {
            logger.error("request failed", metadata: ["lmcache.error": "\(error)"])
            response = Self.errorResponse(
                APIError(status: 500, message: "\(error)", type: "server_error")
            )
        }
        metrics.countRequest(endpoint: endpoint, status: response.status.code)
        return response
    }

    private func completions(_ request: Request, clientGone: Latch) async throws -> Response {
        var request = request
        let body = try await decode(CompletionRequest.self, from: &request)
        try OpenAIRequestParser.checkCompletion(body)
        let tokens = engine.tokenizer.encode(body.prompt.values[0], addSpecial: true, parseSpecial: true)
        let generation = try makeGeneration(
            body,
            prompt: tokens,
            defaultMaxTokens: min(Self.completionsDefaultMaxTokens, configuration.maxTokensDefault),
            request: request
        )
        let admission = try admit()
        let id = "cmpl-" + Self.randomID()
        let model = configuration.modelName
        let created = Int(Date().timeIntervalSince1970)
        if body.stream == true {
            let includeUsage = body.streamOptions?.includeUsage == true
            return stream(generation, admission: admission, clientGone: clientGone) { (event) -> [CompletionResponse] in
                switch event {
                case .start:
                    return []
                case .text(let text):
                    return [CompletionResponse(id: id, created: created, model: model, choices: [.init(text: text)])]
                case .finish(let reason, let usage):
                    var chunks = [
                        CompletionResponse(
                            id: id,
                            created: created,
                            model: model,
                            choices: [.init(text: "", finishReason: reason)]
                        )
                    ]
                    if includeUsage {
                        chunks.append(
                            CompletionResponse(id: id, created: created, model: model, choices: [], usage: usage)
                        )
                    }
                    return chunks
                }
            }
        }
        let (result, usage) = try await run(generation, admission: admission, clientGone: clientGone)
        return Self.json(
            CompletionResponse(
                id: id,
                created: created,
                model: model,
                choices: [.init(text: result.text, finishReason: Self.finishReason(result.finishReason))],
                usage: usage
            )
        )
    }

    private func chatCompletions(_ request: Request, clientGone: Latch) async throws -> Response {
        var request = request
        let body = try await decode(ChatCompletionRequest.self, from: &request)
        try OpenAIRequestParser.checkChat(body)
        let text = template.render(body.messages)
        let tokens = engine.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        let generation = try makeGeneration(
            body,
            prompt: tokens,
            defaultMaxTokens: configuration.maxTokensDefault,
            request: request
        )
        let admission = try admit()
        let id = "chatcmpl-" + Self.randomID()
        let model = configuration.modelName
        let created = Int(Date().timeIntervalSince1970)
        if body.stream == true {
            let includeUsage = body.streamOptions?.includeUsage == true
            @Sendable func chunk(_ delta: ChatDelta, _ reason: String? = nil) -> ChatCompletionResponse {
                ChatCompletionResponse(
                    id: id,
                    object: "chat.completion.chunk",
                    created: created,
                    model: model,
                    choices: [ChatChoice(delta: delta, finishReason: reason)]
                )
            }
            return stream(generation, admission: admission, clientGone: clientGone) { event in
                switch event {
                case .start:
                    return [chunk(ChatDelta(role: "assistant", content: ""))]
                case .text(let text):
                    return [chunk(ChatDelta(content: text))]
                case .finish(let reason, let usage):
                    var chunks = [chunk(ChatDelta(), reason)]
                    if includeUsage {
                        chunks.append(
                            ChatCompletionResponse(
                                id: id,
                                object: "chat.completion.chunk",
                                created: created,
                                model: model,
                                choices: [],
                                usage: usage
                            )
                        )
                    }
                    return chunks
                }
            }
        }
        let (result, usage) = try await run(generation, admission: admission, clientGone: clientGone)
        return Self.json(
            ChatCompletionResponse(
                id: id,
                object: "chat.completion",
                created: created,
                model: model,
                choices: [
                    ChatChoice(
                        message: ChatDelta(role: "assistant", content: result.text),
                        finishReason: Self.finishReason(result.finishReason)
                    )
                ],
                usage: usage
            )
        )
    }

    // MARK: Generation

    /// Checks the sampling fields, the length limit and the prompt's length, and builds the engine request.
    /// A request without a length limit generates up to `defaultMaxTokens`, or what is left of the context.
    private func makeGeneration(
        _ body: some GenerationFields,
        prompt: [Int32],
        defaultMaxTokens: Int,
        request: Request
    ) throws(APIError) -> GenerationRequest {
        let limit = maxModelLength
        let parameters = try OpenAIRequestParser.parameters(body, maxModelLength: limit)
        let requested = parameters.lengthLimit
        guard prompt.count < limit else {
            throw APIError(
                message: "This model's maximum context length is \(limit) tokens. However, your prompt has "
                    + "\(prompt.count) tokens. Please reduce the length of the prompt.",
                param: "prompt",
                code: "context_length_exceeded"
            )
        }
        let room = limit - prompt.count
        if let requested, requested.count > room {
            throw APIError(
                message: "This model's maximum context length is \(limit) tokens. However, you requested "
                    + "\(prompt.count + requested.count) tokens (\(prompt.count) in the prompt, \(requested.count) "
                    + "in the completion). Please reduce the length of the prompt or \(requested.field).",
                param: requested.field,
                code: "context_length_exceeded"
            )
        }
        let sampling = SamplingParameters(
            temperature: Float(parameters.temperature),
            topK: parameters.topK,
            topP: Float(parameters.topP),
            seed: parameters.seed ?? UInt64.random(in: 0...UInt64.max)
        )
        let headerSalt = HTTPField.Name(Self.tenantHeader).flatMap { request.headers[$0] }
        let salt = parameters.cacheSalt ?? headerSalt
        return GenerationRequest(
            prompt: prompt,
            maxTokens: requested?.count ?? min(defaultMaxTokens, room),
            sampling: sampling,
            stop: parameters.stop,
            salt: salt.flatMap { $0.isEmpty ? nil : $0 }
        )
    }

    /// Admits one more generation, unless as many as the engine runs plus
    /// ``Configuration/maxQueuedRequests`` are already admitted.
    /// - Throws: ``queueFull`` (503, `Retry-After`) when the server is full.
    private func admit() throws(APIError) -> Admission {
        guard metrics.admit(limit: engine.limits.maxSequences + configuration.maxQueuedRequests) else {
            throw Self.queueFull
        }
        return Admission(metrics: metrics)
    }

    /// Runs a generation to the end and returns it with its usage; gives `admission` back when it ends.
    /// - Throws: ``ClientGone`` when the client went away (the generation was cancelled);
    ///   ``shuttingDown`` when a shutdown cut it short; ``timedOutError`` when the request timeout did.
    private func run(
        _ generation: GenerationRequest,
        admission: Admission,
        clientGone: Latch
    ) async throws -> (GenerationResult, Usage) {
        defer { admission.release() }
        let clock = FirstTokenClock(metrics: metrics)
        let timedOut = Latch()
        let result: GenerationResult
        do {
            result = try await generate(generation, until: clientGone, timedOut: timedOut) { _, _ in
                clock.mark()
                return true
            }
        } catch is CancellationError where clientGone.isSet {
            metrics.countDisconnect()
            throw ClientGone()
        } catch is CancellationError where timedOut.isSet {
            metrics.countTimeout()
            throw timedOutError
        }
        let usage = record(result)
        if clientGone.isSet {
            metrics.countDisconnect()
            throw ClientGone()
        }
        if isCutByShutdown(result, generation) { throw Self.shuttingDown }
        if timedOut.isSet && Self.isCut(result, generation) {
            metrics.countTimeout()
            throw timedOutError
        }
        return (result, usage)
    }

    /// Runs `generation` on the engine, cancelling it (the engine's one cancellation path: it leaves the
    /// queue, or its sequence leaves the next step) when `clientGone` is set, when the request timeout
    /// (if any) passes, which sets `timedOut`, or when this task is cancelled. A generation cancelled
    /// while running returns what it has; one cancelled while waiting throws `CancellationError`.
    private func generate(
        _ generation: GenerationRequest,
        until clientGone: Latch,
        timedOut: Latch,
        onToken: @escaping @Sendable (Int32, String) -> Bool
    ) async throws -> GenerationResult {
        let engine = self.engine
        return try await withThrowingTaskGroup(of: GenerationResult?.self) { group in
            group.addTask { try await engine.generate(generation, onToken: onToken) }
            group.addTask {
                await clientGone.wait()
                return nil
            }
            if let timeout = configuration.requestTimeout {
                group.addTask {
                    // Cancelled when the generation ends first.
                    guard (try? await Task.sleep(for: timeout)) != nil else { return nil }
                    timedOut.set()
                    return nil
                }
            }
            while let outcome = try await group.next() {
                // The first to end is the generation (the watches are then cancelled) or a watch (the
                // generation is then cancelled, and its outcome follows).
                group.cancelAll()
                if let result = outcome { return result }
            }
            throw CancellationError()
        }
    }

    /// Whether `result` ended because it was cancelled rather than by itself.
    private static func isCut(_ result: GenerationResult, _ generation: GenerationRequest) -> Bool {
        result.finishReason == .length && result.tokens.count < generation.maxTokens
    }

    /// Whether `result` ended because a shutdown cancelled it rather than by itself.
    private func isCutByShutdown(_ result: GenerationResult, _ generation: GenerationRequest) -> Bool {
        aborting.isSet && Self.isCut(result, generation)
    }

    /// The error of a request that the server had no room for.
    static let queueFull = APIError(
        status: 503,
        message: "the server is at capacity: every running and queued place is taken; retry later",
        type: "server_error",
        code: "queue_full",
        retryAfter: 1
    )

    /// The error of a request that ran past ``Configuration/requestTimeout``.
    var timedOutError: APIError {
        APIError(
            status: 504,
            message: "the request did not finish within the server's request timeout of "
                + "\(configuration.requestTimeout ?? .zero) and was cancelled",
            type: "server_error",
            code: "request_timeout"
        )
    }

    /// The error of a request that a shutdown cut short.
    static let shuttingDown = APIError(
        status: 503,
        message: "the server is shutting down; the request was cancelled before it finished",
        type: "server_error",
        code: "shutting_down"
    )

    private func record(_ result: GenerationResult) -> Usage {
        metrics.recordGeneration(
            promptTokens: result.promptTokens,
            cachedTokens: result.cachedTokens,
            generatedTokens: result.tokens.count
        )
        return Usage(
            promptTokens: result.promptTokens,
            completionTokens: result.tokens.count,
            cachedTokens: result.cachedTokens
        )
    }

    /// What a streamed response sends, before formatting.
    enum StreamEvent {
        case start
        case text(String)
        case finish(reason: String, usage: Usage)
    }

    /// A server-sent-events response: `data: {json}` per chunk that `format` makes, then `data: [DONE]`.
    /// Text is sent as each token arrives, except a tail that could be the start of a stop string.
    private func stream<Chunk: Encodable & Sendable>(
        _ generation: GenerationRequest,
        admission: Admission,
        clientGone: Latch,
        format: @escaping @Sendable (StreamEvent) -> [Chunk]
    ) -> Response {
        let metrics = self.metrics
        let server = self
        let body = ResponseBody { writer in
            let (pieces, continuation) = AsyncStream.makeStream(of: String.self)
            defer { admission.release() }
            let clock = FirstTokenClock(metrics: metrics)
            let timedOut = Latch()
            var writeFailed = false
            var filter = StopStringFilter(stops: generation.stop)
            let outcome = await withTaskGroup(of: Result<GenerationResult, any Error>.self) { group in
                group.addTask {
                    defer { continuation.finish() }
                    do {
                        return .success(
                            try await server.generate(generation, until: clientGone, timedOut: timedOut) { _, piece in
                                clock.mark()
                                if !piece.isEmpty { continuation.yield(piece) }
                                return true
                            }
                        )
                    } catch {
                        return .failure(error)
                    }
                }
                do {
                    try await writer.write(Self.events(format(.start)))
                    for await piece in pieces {
                        let text = filter.push(piece)
                        if !text.isEmpty { try await writer.write(Self.events(format(.text(text)))) }
                    }
                } catch {
                    // A write failed: the client went away. Cancelling the task cancels the generation.
                    writeFailed = true
                    group.cancelAll()
                }
                return await group.next() ?? .failure(CancellationError())
            }
            let gone = writeFailed || clientGone.isSet
            switch outcome {
            case .success(let result):
                // What was generated is counted, even for nobody.
                let usage = server.record(result)
                if gone {
                    metrics.countDisconnect()
                    throw ClientGone()
                }
                var out = ByteBuffer()
                if server.isCutByShutdown(result, generation) {
                    out.writeImmutableBuffer(Self.events([ErrorBody(Self.shuttingDown)]))
                } else if timedOut.isSet && Self.isCut(result, generation) {
                    metrics.countTimeout()
                    out.writeImmutableBuffer(Self.events([ErrorBody(server.timedOutError)]))
                } else {
                    let rest = filter.finish(result.text)
                    if !rest.isEmpty { out.writeImmutableBuffer(Self.events(format(.text(rest)))) }
                    out.writeImmutableBuffer(
                        Self.events(format(.finish(reason: Self.finishReason(result.finishReason), usage: usage)))
                    )
                }
                out.writeString("data: [DONE]\n\n")
                try await writer.write(out)
            case .failure(let error):
                if gone {
                    metrics.countDisconnect()
                    throw ClientGone()
                }
                let failure: APIError
                let stopped = (error as? InferenceError)?.isStopped == true
                if stopped || (error is CancellationError && server.aborting.isSet) {
                    failure = Self.shuttingDown
                } else if error is CancellationError && timedOut.isSet {
                    metrics.countTimeout()
                    failure = server.timedOutError
                } else if let error = error as? InferenceError {
                    // As a response that has not started would report it (`respond`), but as an event:
                    // the status line went out with the first event.
                    failure = Self.apiError(error)
                } else {
                    server.logger.error("streamed request failed", metadata: ["lmcache.error": "\(error)"])
                    failure = APIError(status: 500, message: "\(error)", type: "server_error")
                }
                var out = Self.events([ErrorBody(failure)])
                out.writeString("data: [DONE]\n\n")
                try await writer.write(out)
            }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: body
        )
    }

    // MARK: Helpers

    private func decode<T: Decodable>(_ type: T.Type, from request: inout Request) async throws -> T {
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: configuration.maxRequestBytes)
        } catch {
            throw APIError(
                status: 413,
                message: "the request body exceeds \(configuration.maxRequestBytes) bytes"
            )
        }
        return try OpenAIRequestParser.decode(T.self, from: Data(buffer.readableBytesView))
    }

    /// How an engine error is reported: a 400 for input the client can fix, else a 500.
    static func apiError(_ error: InferenceError) -> APIError {
        error.isInvalidInput
            ? APIError(message: error.message) : APIError(status: 500, message: error.message, type: "server_error")
    }

    static func finishReason(_ reason: FinishReason) -> String {
        reason == .length ? "length" : "stop"
    }

    static func randomID() -> String {
        String(UInt64.random(in: 0...UInt64.max), radix: 16) + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return encoder
    }()

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(
            status: status,
            headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: data))
        )
    }

    static func events(_ chunks: [some Encodable]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for chunk in chunks {
            buffer.writeString("data: ")
            buffer.writeBytes((try? encoder.encode(chunk)) ?? Data("{}".utf8))
            buffer.writeString("\n\n")
        }
        return buffer
    }

    /// The status of an error's code, with its standard reason phrase.
    static func httpStatus(_ code: Int) -> HTTPResponse.Status {
        switch code {
        case 400: .badRequest
        case 413: .contentTooLarge
        case 500: .internalServerError
        case 503: .serviceUnavailable
        case 504: .gatewayTimeout
        default: HTTPResponse.Status(code: code)
        }
    }

    static func errorResponse(_ error: APIError) -> Response {
        var response = json(ErrorBody(error), status: httpStatus(error.status))
        if let seconds = error.retryAfter { response.headers[.retryAfter] = String(seconds) }
        return response
    }
}


/// A place among the generations the server admits at once (``OpenAIServer/Configuration/maxQueuedRequests``),
/// counted in ``ServerMetrics``; given back once, by ``release()`` or else when it is dropped (a streamed
/// response whose body never ran).
final class Admission: Sendable {
    private let metrics: ServerMetrics
    private let released = Atomic(false)

    init(metrics: ServerMetrics) { self.metrics = metrics }

    deinit { release() }

    /// Gives the place back; later calls do nothing.
    func release() {
        guard !released.exchange(true, ordering: .relaxed) else { return }
        metrics.leave()
    }
}

/// Thrown by a request whose client went away; its response goes nowhere.
struct ClientGone: Error {}

extension ErrorBody {
    init(_ error: APIError) {
        self.init(
            error: Detail(message: error.message, type: error.type, param: error.param, code: error.code)
        )
    }
}

/// Records the time from its creation to the first `mark()` as a TTFT.
final class FirstTokenClock: Sendable {
    private let start = ContinuousClock.now
    private let marked = Atomic(false)
    private let metrics: ServerMetrics

    init(metrics: ServerMetrics) { self.metrics = metrics }

    func mark() {
        guard !marked.exchange(true, ordering: .relaxed) else { return }
        let elapsed = ContinuousClock.now - start
        metrics.recordTTFT(
            seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        )
    }
}

/// Holds back streamed text that could be the start of a stop string, so that a stop string is never
/// partly sent.
struct StopStringFilter {
    let stops: [[Unicode.Scalar]]
    private var text: [Unicode.Scalar] = []
    private var emitted = 0

    init(stops: [String]) { self.stops = stops.map { Array($0.unicodeScalars) } }

    /// Adds a piece; returns the text that can be sent now.
    mutating func push(_ piece: String) -> String {
        text.append(contentsOf: piece.unicodeScalars)
        var hold = 0
        for stop in stops {
            for length in stride(from: min(stop.count - 1, text.count), to: hold, by: -1)
            where text[(text.count - length)...].elementsEqual(stop[..<length]) {
                hold = length
                break
            }
        }
        let end = max(emitted, text.count - hold)
        defer { emitted = end }
        return Self.string(text[emitted..<end])
    }

    /// The rest of `final` (the generation's text, cut before any stop string) not sent yet.
    mutating func finish(_ final: String) -> String {
        let scalars = Array(final.unicodeScalars)
        guard scalars.count > emitted else { return "" }
        defer { emitted = scalars.count }
        return Self.string(scalars[emitted...])
    }

    private static func string(_ scalars: ArraySlice<Unicode.Scalar>) -> String {
        var result = String.UnicodeScalarView()
        result.append(contentsOf: scalars)
        return String(result)
    }
}
