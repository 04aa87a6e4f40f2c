import LMCacheServer
import LMCacheWire
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing

/// A raw TCP connection for byte-level tests.
struct RawConnection {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    var buffered = ByteBuffer()

    func send(_ buffer: ByteBuffer) async throws { try await outbound.write(buffer) }

    func send(_ header: LMRequestHeader, payload: [UInt8] = []) async throws {
        var buffer = ByteBuffer()
        header.write(to: &buffer)
        buffer.writeBytes(payload)
        try await outbound.write(buffer)
    }

    /// Exactly `count` bytes, or `nil` when the connection closed first.
    mutating func read(_ count: Int) async throws -> ByteBuffer? {
        while buffered.readableBytes < count {
            guard var more = try await iterator.next() else { return nil }
            buffered.writeBuffer(&more)
        }
        return buffered.readSlice(length: count)
    }

    mutating func readReply() async throws -> (LMReplyHeader, [UInt8])? {
        guard var head = try await read(LMReplyHeader.size), let header = LMReplyHeader.read(from: &head) else {
            return nil
        }
        if header.isSuccess && header.length > 0 {
            guard let payload = try await read(Int(header.length)) else { return nil }
            return (header, Array(payload.readableBytesView))
        }
        return (header, [])
    }

    /// Whether the server closed the connection (reads until end of stream, discarding).
    mutating func isClosed() async -> Bool {
        do {
            while try await iterator.next() != nil {}
            return true
        } catch {
            return true
        }
    }
}

func withRawConnection<R: Sendable>(port: Int, _ body: (inout RawConnection) async throws -> R) async throws -> R {
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await channel.executeThenClose { inbound, outbound in
        var connection = RawConnection(channel: channel, iterator: inbound.makeAsyncIterator(), outbound: outbound)
        return try await body(&connection)
    }
}

/// Thrown by a step of a timing test that the machine held up (see ``retryingMachineStalls``).
struct MachineStalled: Error {}

/// Runs `body` until it completes without throwing ``MachineStalled``, at most five times.
///
/// A test of the server's idle timeout needs the test itself to keep to time: on a machine so
/// loaded that the test is held past the idle timeout between two of its own steps, the server is
/// right to close the connection. `body` gets a check, "held since this instant", and throws
/// ``MachineStalled`` where it was; such an attempt never counts as a failure or as a success.
func retryingMachineStalls(
    _ what: String,
    idleTimeout: Duration,
    _ body: (_ held: (ContinuousClock.Instant) -> Bool) async throws -> Void
) async throws {
    let held = { (instant: ContinuousClock.Instant) in ContinuousClock.now - instant >= idleTimeout }
    for _ in 0..<5 {
        do {
            return try await body(held)
        } catch is MachineStalled {
            continue
        }
    }
    Issue.record("\(what): the machine held the test past the idle timeout in every attempt")
}
