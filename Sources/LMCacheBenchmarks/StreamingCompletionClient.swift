import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// One streamed completion as a client sees it over HTTP.
struct StreamedCompletion {
    /// Seconds from opening the connection to the first non-empty piece of text.
    var timeToFirstToken: Double
    /// Seconds between the first and the second piece of text (one decode step), when there were two.
    var secondTokenGap: Double?
    /// Seconds from opening the connection to the end of the response.
    var latency: Double
    /// The streamed text.
    var text: String
    /// `usage.prompt_tokens` and `usage.prompt_tokens_details.cached_tokens` of the final chunk.
    var promptTokens: Int
    var cachedTokens: Int
}

/// `POST /v1/completions` with `stream: true` over a fresh HTTP/1.1 connection, timing the first
/// streamed token as a client does: from the connect to the first server-sent event that carries text.
enum StreamingCompletionClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Sends `body` (a completion request; `stream` and `stream_options.include_usage` are set here).
    static func complete(host: String, port: Int, body: [String: Any]) async throws -> StreamedCompletion {
        var body = body
        body["stream"] = true
        body["stream_options"] = ["include_usage": true]
        let payload = try JSONSerialization.data(withJSONObject: body)
        let start = ContinuousClock.now
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
                        wrappingChannelSynchronously: channel
                    )
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/v1/completions")
            head.headers.add(name: "Host", value: "\(host):\(port)")
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: "\(payload.count)")
            head.headers.add(name: "Connection", value: "close")
            try await outbound.write(.head(head))
            try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: payload))))
            try await outbound.write(.end(nil))

            var status: UInt = 0
            var pending = ""
            var text = ""
            var first: ContinuousClock.Instant?
            var second: ContinuousClock.Instant?
            var usage: [String: Any]?
            for try await part in inbound {
                switch part {
                case .head(let response):
                    status = response.status.code
                case .body(let buffer):
                    pending += String(buffer: buffer)
                    guard status == 200 else { continue }
                    while let end = pending.range(of: "\n\n") {
                        let event = pending[..<end.lowerBound]
                        pending.removeSubrange(..<end.upperBound)
                        guard event.hasPrefix("data: "), event != "data: [DONE]" else { continue }
                        let object = try JSONSerialization.jsonObject(with: Data(event.dropFirst(6).utf8))
                        guard let object = object as? [String: Any] else { continue }
                        if let found = object["usage"] as? [String: Any] { usage = found }
                        let choices = object["choices"] as? [[String: Any]] ?? []
                        guard let piece = choices.first?["text"] as? String, !piece.isEmpty else { continue }
                        let now = ContinuousClock.now
                        if first == nil { first = now } else if second == nil { second = now }
                        text += piece
                    }
                case .end:
                    break
                }
            }
            guard status == 200 else { throw Failure(description: "HTTP \(status): \(pending)") }
            let end = ContinuousClock.now
            guard let usage, let promptTokens = usage["prompt_tokens"] as? Int else {
                throw Failure(description: "the stream ended without usage")
            }
            let details = usage["prompt_tokens_details"] as? [String: Any]
            return StreamedCompletion(
                timeToFirstToken: Self.seconds((first ?? end) - start),
                secondTokenGap: first.flatMap { first in second.map { Self.seconds($0 - first) } },
                latency: Self.seconds(end - start),
                text: text,
                promptTokens: promptTokens,
                cachedTokens: details?["cached_tokens"] as? Int ?? 0
            )
        }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
