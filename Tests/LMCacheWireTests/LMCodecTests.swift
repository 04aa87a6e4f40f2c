import LMCacheWire
import NIOCore
import NIOEmbedded
import NIOTestUtils
import LMCacheTestSupport
import Testing

/// The `lm://` codec alone, with no network: the byte layouts of LM_PROTOCOL.md, every command,
/// input split at every byte boundary, several requests per read, and hostile input.
struct LMCodecTests {
    static let exampleKey = "Qwen/Qwen3-8B@1@0@7f3a9c21e4b05d18@bfloat16"

    static func bytes(_ hex: String) -> [UInt8] {
        hex.split(whereSeparator: { $0 == " " || $0 == "|" || $0 == "\n" }).map { UInt8($0, radix: 16)! }
    }

    static func encode(_ header: LMRequestHeader, payload: [UInt8] = []) -> ByteBuffer {
        var buffer = ByteBuffer()
        header.write(to: &buffer)
        buffer.writeBytes(payload)
        return buffer
    }

    /// One request of each command, with a small payload on the PUT.
    static let sampleRequests: [LMRequest] = [
        LMRequest(
            header: LMRequestHeader(
                command: .put,
                key: "m@1@0@00ff@float16",
                length: 5,
                format: 1,
                dtype: 2,
                location: 7,
                shape: LMShape([1, 2, 3, 4])
            ),
            payload: ByteBuffer(bytes: [1, 2, 3, 4, 5])
        ),
        LMRequest(header: LMRequestHeader(command: .get, key: "m@1@0@00ff@float16")),
        LMRequest(header: LMRequestHeader(command: .exist, key: "ключ-ü")),
        LMRequest(header: LMRequestHeader(command: .health, key: "")),
        LMRequest(header: LMRequestHeader(command: .list, key: "")),
        LMRequest(
            header: LMRequestHeader(command: .put, key: String(repeating: "k", count: 150), length: 0),
            payload: ByteBuffer()
        ),
    ]

    static func wire(_ requests: [LMRequest]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for request in requests {
            request.header.write(to: &buffer)
            var payload = request.payload
            buffer.writeBuffer(&payload)
        }
        return buffer
    }

    @Test("the PUT header of LM_PROTOCOL.md's example encodes to its bytes")
    func exampleRequestBytes() throws {
        let header = LMRequestHeader(
            command: .put,
            key: Self.exampleKey,
            length: 37_748_736,
            format: 1,
            dtype: 3,
            location: 0,
            shape: LMShape([2, 36, 256, 1024])
        )
        let buffer = Self.encode(header)
        #expect(buffer.readableBytes == 186)
        let expected =
            Self.bytes(
                """
                01 00 00 00  00 00 40 02  01 00 00 00  03 00 00 00  00 00 00 00
                02 00 00 00  24 00 00 00  00 01 00 00  00 04 00 00
                """
            ) + Array(Self.exampleKey.utf8) + [UInt8](repeating: 0x20, count: 107)
        #expect(Array(buffer.readableBytesView) == expected)
        #expect(try LMRequestHeader.peek(buffer) == header)
    }

    @Test("a GET miss reply is LM_PROTOCOL.md's 36 bytes")
    func exampleMissReply() {
        var buffer = ByteBuffer()
        LMReplyHeader.miss.write(to: &buffer)
        let expected =
            Self.bytes("90 01 00 00 | 00 00 00 00 | 01 00 00 00 | 02 00 00 00")
            + [UInt8](repeating: 0, count: 16) + [0, 0, 0, 0]
        #expect(Array(buffer.readableBytesView) == expected)
        #expect(LMReplyHeader.read(from: &buffer) == .miss)
        #expect(buffer.readableBytes == 0)
    }

    @Test("reply headers round-trip, and a short one is left unread")
    func replyRoundTrip() {
        let header = LMReplyHeader(
            code: 200,
            length: 99,
            format: 3,
            dtype: 4,
            shape: LMShape([9, 8, 7, 6]),
            location: 5
        )
        var buffer = ByteBuffer()
        header.write(to: &buffer)
        var short = buffer.getSlice(at: 0, length: 35)!
        #expect(LMReplyHeader.read(from: &short) == nil)
        #expect(short.readableBytes == 35)
        #expect(LMReplyHeader.read(from: &buffer) == header)
    }

    @Test("every command decodes", arguments: sampleRequests)
    func everyCommand(_ request: LMRequest) throws {
        var buffer = Self.wire([request])
        let decoded = try LMRequestDecoder(maximumPayloadBytes: 1 << 20).decode(buffer: &buffer)
        #expect(decoded == request)
        #expect(buffer.readableBytes == 0)
    }

    @Test("input split at every byte boundary decodes to the same requests")
    func everySplit() throws {
        let whole = Self.wire(Self.sampleRequests)
        for split in 0...whole.readableBytes {
            let channel = EmbeddedChannel(handler: ByteToMessageHandler(LMRequestDecoder(maximumPayloadBytes: 1 << 20)))
            try channel.writeInbound(whole.getSlice(at: 0, length: split)!)
            try channel.writeInbound(whole.getSlice(at: split, length: whole.readableBytes - split)!)
            var decoded: [LMRequest] = []
            while let request = try channel.readInbound(as: LMRequest.self) { decoded.append(request) }
            #expect(decoded == Self.sampleRequests, "split at \(split)")
            #expect(try channel.finish().isClean)
        }
    }

    @Test("several requests in one read decode in order")
    func coalesced() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LMRequestDecoder(maximumPayloadBytes: 1 << 20)))
        let requests = Array(repeating: Self.sampleRequests, count: 5).flatMap { $0 }
        try channel.writeInbound(Self.wire(requests))
        var decoded: [LMRequest] = []
        while let request = try channel.readInbound(as: LMRequest.self) { decoded.append(request) }
        #expect(decoded == requests)
        #expect(try channel.finish().isClean)
    }

    @Test("ByteToMessageDecoderVerifier: drip-fed and coalesced input")
    func verifier() throws {
        let pairs = Self.sampleRequests.map { (Self.wire([$0]), [$0]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            LMRequestDecoder(maximumPayloadBytes: 1 << 20)
        }
    }

    @Test("need-more-data never moves the reader index")
    func partialLeavesReaderIndex() throws {
        let whole = Self.wire([Self.sampleRequests[0]])
        let decoder = LMRequestDecoder(maximumPayloadBytes: 1 << 20)
        for length in 0..<whole.readableBytes {
            var buffer = ByteBuffer(bytes: [0xAA, 0xBB])
            buffer.moveReaderIndex(forwardBy: 2)
            buffer.writeImmutableBuffer(whole.getSlice(at: 0, length: length)!)
            let before = buffer.readerIndex
            #expect(try decoder.decode(buffer: &buffer) == nil)
            #expect(buffer.readerIndex == before)
        }
    }

    static func expectError(_ code: LMProtocolError.Code, _ buffer: ByteBuffer, cap: Int = 1 << 20) {
        var buffer = buffer
        #expect {
            _ = try LMRequestDecoder(maximumPayloadBytes: cap).decode(buffer: &buffer)
        } throws: { error in
            (error as? LMProtocolError)?.code == code
        }
    }

    @Test("unknown commands are rejected", arguments: [Int32(0), 6, -1, Int32.max, 0x0100_0000])
    func unknownCommand(_ command: Int32) {
        var buffer = Self.wire([LMRequest(header: LMRequestHeader(command: .get, key: "k"))])
        buffer.setInteger(command, at: 0, endianness: .little)
        Self.expectError(.unknownCommand, buffer)
    }

    @Test("a key that is not UTF-8 is rejected")
    func invalidKey() {
        for bad: [UInt8] in [[0xFF], [0xC3], [0xED, 0xA0, 0x80], [0x61, 0x80, 0x62]] {
            var buffer = Self.wire([LMRequest(header: LMRequestHeader(command: .get, key: ""))])
            buffer.setBytes(bad, at: 36)
            Self.expectError(.invalidKey, buffer)
        }
    }

    @Test("negative and oversized lengths are rejected from the header alone")
    func lengths() {
        var negative = Self.encode(LMRequestHeader(command: .put, key: "k"))
        negative.setInteger(Int32(-5), at: 4, endianness: .little)
        Self.expectError(.negativeLength, negative)
        // Only the header is here: the cap is enforced before any payload is buffered.
        Self.expectError(.payloadTooLarge, Self.encode(LMRequestHeader(command: .put, key: "k", length: Int32.max)))
        Self.expectError(
            .payloadTooLarge,
            Self.encode(LMRequestHeader(command: .put, key: "k", length: 1025)),
            cap: 1024
        )
        Self.expectError(.unexpectedPayload, Self.encode(LMRequestHeader(command: .get, key: "k", length: 3)))
    }

    @Test("an oversized length on a channel errors without waiting for the payload")
    func oversizedOnChannel() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(LMRequestDecoder(maximumPayloadBytes: 100)))
        #expect(throws: LMProtocolError.self) {
            try channel.writeInbound(Self.encode(LMRequestHeader(command: .put, key: "k", length: 101)))
        }
        _ = try? channel.finish()
    }

    @Test("random bytes never crash the decoder")
    func randomInput() {
        var generator = SeededGenerator.fromEnvironment(default: 0x1A_C0DE)
        let decoder = LMRequestDecoder(maximumPayloadBytes: 4096)
        for round in 0..<2000 {
            let count = Int.random(in: 0...600, using: &generator)
            var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if round.isMultiple(of: 2), count >= 8 {
                // Plausible command and length fields reach the later checks.
                bytes[0] = UInt8.random(in: 1...5, using: &generator)
                bytes[1] = 0
                bytes[2] = 0
                bytes[3] = 0
                bytes[5] = 0
                bytes[6] = 0
                bytes[7] = 0
            }
            var buffer = ByteBuffer(bytes: bytes)
            while true {
                guard let request = try? decoder.decode(buffer: &buffer) else { break }
                #expect(request.payload.readableBytes == Int(request.header.length))
            }
        }
    }

    @Test("a header refuses keys longer than 150 bytes only by precondition; 150 fit exactly")
    func longestKey() throws {
        let key = String(repeating: "é", count: 75)  // 150 bytes
        let buffer = Self.encode(LMRequestHeader(command: .exist, key: key))
        #expect(buffer.readableBytes == 186)
        #expect(try LMRequestHeader.peek(buffer)?.key == key)
    }
}
