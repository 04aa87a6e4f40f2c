import LMCacheWire
import NIOCore
import NIOEmbedded
import NIOTestUtils
import LMCacheTestSupport
import Testing

/// The P2P controller codec alone: round trips of every message, the byte layout, input split at
/// every boundary, and hostile input (truncated, oversized, unknown, malformed).
struct ControllerCodecTests {
    static let keys = (0..<3).map {
        ControllerChunkKey(low: 0x0102_0304_0506_0708 &* UInt64($0 + 1), high: UInt64($0) << 60, tokenCount: 256)
    }

    static let samples: [ControllerMessage] = [
        .register(instanceID: "instance-a", host: "10.77.0.2", port: 8200),
        .report(instanceID: "instance-a", admitted: keys, removed: [keys[0]]),
        .report(instanceID: "ü", admitted: [], removed: []),
        .heartbeat(instanceID: "instance-a"),
        .lookup(instanceID: "instance-b", keys: keys),
        .forget(peerID: "instance-a", keys: [keys[2]]),
        .deregister(instanceID: "instance-a"),
        .ok,
        .unknownInstance,
        .peer(instanceID: "instance-a", host: "::1", port: 65535, count: 3),
        .peer(instanceID: "", host: "", port: 0, count: 0),
        .failure("refused"),
    ]

    static func wire(_ messages: [ControllerMessage]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for message in messages { message.write(to: &buffer) }
        return buffer
    }

    /// A frame with the given type and body bytes (the length computed).
    static func frame(type: UInt8, version: UInt8 = 1, body: [UInt8] = [], length: UInt32? = nil) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(length ?? UInt32(2 + body.count))
        buffer.writeInteger(version)
        buffer.writeInteger(type)
        buffer.writeBytes(body)
        return buffer
    }

    @Test("every message round-trips", arguments: samples)
    func roundTrip(_ message: ControllerMessage) throws {
        var buffer = message.encoded()
        #expect(try ControllerMessage.read(from: &buffer) == message)
        #expect(buffer.readableBytes == 0)
    }

    @Test("a heartbeat is length, version, type, then the id as u16 length and UTF-8")
    func heartbeatBytes() {
        let buffer = ControllerMessage.heartbeat(instanceID: "ab").encoded()
        #expect(Array(buffer.readableBytesView) == [0, 0, 0, 6, 1, 3, 0, 2, 0x61, 0x62])
    }

    @Test("a lookup carries 20 bytes per key")
    func keySize() {
        let one = ControllerMessage.lookup(instanceID: "", keys: [Self.keys[0]]).encoded().readableBytes
        let three = ControllerMessage.lookup(instanceID: "", keys: Self.keys).encoded().readableBytes
        #expect(three - one == 2 * ControllerChunkKey.wireSize)
    }

    @Test("ByteToMessageDecoderVerifier: drip-fed and coalesced input")
    func verifier() throws {
        let pairs = Self.samples.map { ($0.encoded(), [$0]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { ControllerMessageDecoder() }
    }

    @Test("input split at every byte boundary decodes to the same messages, reader index unmoved until whole")
    func splitEverywhere() throws {
        let whole = Self.wire(Self.samples)
        for cut in 0...whole.readableBytes {
            var first = whole.getSlice(at: 0, length: cut)!
            var decoded: [ControllerMessage] = []
            while let message = try ControllerMessage.read(from: &first) { decoded.append(message) }
            let consumed = cut - first.readableBytes
            var rest = first
            var tail = whole.getSlice(at: cut, length: whole.readableBytes - cut)!
            rest.writeBuffer(&tail)
            while let message = try ControllerMessage.read(from: &rest) { decoded.append(message) }
            #expect(decoded == Self.samples, "cut at \(cut)")
            #expect(rest.readableBytes == 0)
            #expect(consumed <= cut)
        }
    }

    @Test("truncated bodies are malformed, whatever the length claims", arguments: Array(0..<9))
    func truncated(_ dropped: Int) throws {
        // A register whose length field matches what is left: the body ends inside a field.
        var full = ControllerMessage.register(instanceID: "abc", host: "h", port: 1).encoded()
        let bodyLength = full.readableBytes - 4
        full.moveReaderIndex(forwardBy: 6)
        let body = Array(full.readableBytesView.dropLast(dropped + 1))
        var buffer = Self.frame(type: 1, body: body)
        #expect(bodyLength > body.count + 2)
        #expect(throws: ControllerProtocolError.self) { try ControllerMessage.read(from: &buffer) }
    }

    @Test("a message cut short on the wire waits for the rest (no error, nothing consumed)")
    func incomplete() throws {
        let whole = ControllerMessage.lookup(instanceID: "b", keys: Self.keys).encoded()
        for cut in 0..<whole.readableBytes {
            var part = whole.getSlice(at: 0, length: cut)!
            #expect(try ControllerMessage.read(from: &part) == nil)
            #expect(part.readableBytes == cut)
        }
    }

    @Test("an oversized length is refused from the length field alone")
    func oversized() throws {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32.max)
        #expect {
            try ControllerMessage.read(from: &buffer)
        } throws: { ($0 as? ControllerProtocolError)?.code == .oversized }
        var small = ControllerMessage.lookup(instanceID: "b", keys: Self.keys).encoded()
        #expect {
            try ControllerMessage.read(from: &small, maximumLength: 32)
        } throws: { ($0 as? ControllerProtocolError)?.code == .oversized }
    }

    @Test("an oversized length on a channel errors at once, without buffering")
    func oversizedOnChannel() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(ControllerMessageDecoder(maximumLength: 1024)))
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(1 << 30))
        #expect(throws: ControllerProtocolError.self) { try channel.writeInbound(buffer) }
        _ = try? channel.finish()  // Closes the pipeline (otherwise channel and handlers keep each other alive).
    }

    @Test("unknown message types are refused", arguments: [UInt8(0), 7, 63, 68, 255])
    func unknownType(_ type: UInt8) {
        var buffer = Self.frame(type: type)
        #expect {
            try ControllerMessage.read(from: &buffer)
        } throws: { ($0 as? ControllerProtocolError)?.code == .unknownMessage }
    }

    @Test("another version is refused")
    func otherVersion() {
        var buffer = Self.frame(type: 64, version: 2)
        #expect {
            try ControllerMessage.read(from: &buffer)
        } throws: { ($0 as? ControllerProtocolError)?.code == .unsupportedVersion }
    }

    @Test("a length below the version and type bytes is refused")
    func tooShort() {
        var buffer = Self.frame(type: 64, length: 1)
        #expect(throws: ControllerProtocolError.self) { try ControllerMessage.read(from: &buffer) }
    }

    @Test("trailing bytes after a body are refused")
    func trailing() {
        var buffer = Self.frame(type: 64, body: [0])
        #expect {
            try ControllerMessage.read(from: &buffer)
        } throws: { ($0 as? ControllerProtocolError)?.code == .malformed }
    }

    @Test("a key count above the cap, or above what the message holds, is refused before allocating")
    func keyCounts() {
        for count in [UInt32(ControllerMessage.maximumKeys + 1), UInt32.max, 5] {
            var body: [UInt8] = [0, 1, 0x61]
            withUnsafeBytes(of: count.bigEndian) { body += $0 }
            body += [UInt8](repeating: 0, count: 20)  // room for one key only
            var buffer = Self.frame(type: 4, body: body)
            #expect {
                try ControllerMessage.read(from: &buffer)
            } throws: { ($0 as? ControllerProtocolError)?.code == .malformed }
        }
    }

    @Test("strings above the cap or not UTF-8 are refused")
    func badStrings() {
        var long = Self.frame(type: 3, body: [1, 0] + [UInt8](repeating: 0x61, count: 256))
        #expect(throws: ControllerProtocolError.self) { try ControllerMessage.read(from: &long) }
        var invalid = Self.frame(type: 3, body: [0, 2, 0xC3, 0x28])
        #expect(throws: ControllerProtocolError.self) { try ControllerMessage.read(from: &invalid) }
    }

    @Test("a peer answer counting more keys than the cap is refused")
    func peerCount() {
        var body: [UInt8] = [0, 0, 0, 0, 0, 1]
        withUnsafeBytes(of: UInt32.max.bigEndian) { body += $0 }
        var buffer = Self.frame(type: 66, body: body)
        #expect(throws: ControllerProtocolError.self) { try ControllerMessage.read(from: &buffer) }
    }

    @Test("long strings are cut to the cap on a character boundary when written")
    func longStringsCut() throws {
        let id = String(repeating: "é", count: 200)  // 400 bytes
        var buffer = ControllerMessage.heartbeat(instanceID: id).encoded()
        guard case .heartbeat(let read) = try ControllerMessage.read(from: &buffer) else {
            Issue.record("not a heartbeat")
            return
        }
        #expect(read.utf8.count <= ControllerMessage.maximumStringBytes)
        #expect(read == String(repeating: "é", count: 127))
    }

    @Test("random bytes never crash the decoder")
    func fuzz() {
        var generator = SeededGenerator.fromEnvironment(default: 0xC0DE_C0DE)
        for _ in 0..<2000 {
            var bytes = (0..<Int.random(in: 0..<64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if bytes.count >= 6 && Bool.random(using: &generator) {
                // A plausible header, so that bodies are exercised too.
                let length = UInt32(bytes.count - 4)
                bytes[0] = 0
                bytes[1] = 0
                bytes[2] = UInt8(length >> 8)
                bytes[3] = UInt8(length & 0xFF)
                bytes[4] = 1
                bytes[5] = [1, 2, 3, 4, 5, 6, 64, 65, 66, 67].randomElement()!
            }
            var buffer = ByteBuffer(bytes: bytes)
            _ = try? ControllerMessage.read(from: &buffer)
        }
    }
}
