import LMCacheWire
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

/// The RESP2 codec with no network: every value type, input split at every byte boundary,
/// coalesced and drip-fed input, binary-safe bulk strings, and hostile input.
struct RESPCodecTests {
    static func buffer(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    /// A wire sample with every kind of value, and what it decodes to.
    static let sample: [(String, RESPValue)] = [
        ("+OK\r\n", .simpleString("OK")),
        ("-MOVED 3999 127.0.0.1:6381\r\n", .error("MOVED 3999 127.0.0.1:6381")),
        (":0\r\n", .integer(0)),
        (":-9223372036854775807\r\n", .integer(-9_223_372_036_854_775_807)),
        ("$-1\r\n", .bulkString(nil)),
        ("$0\r\n\r\n", .bulkString(ByteBuffer())),
        ("$6\r\na\r\nb\0c\r\n", .bulkString(ByteBuffer(bytes: Array("a\r\nb\0c".utf8)))),
        ("*-1\r\n", .array(nil)),
        ("*0\r\n", .array([])),
        (
            "*3\r\n:1\r\n*2\r\n$3\r\nfoo\r\n+bar\r\n$-1\r\n",
            .array([.integer(1), .array([.bulkString(ByteBuffer(string: "foo")), .simpleString("bar")]), .bulkString(nil)])
        ),
    ]

    static func decodeAll(_ chunks: [ByteBuffer]) throws -> [RESPValue] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPValueDecoder()))
        var result: [RESPValue] = []
        for chunk in chunks {
            try channel.writeInbound(chunk)
            while let value: RESPValue = try channel.readInbound() { result.append(value) }
        }
        #expect(try channel.finish().isClean)
        return result
    }

    @Test("each value type decodes from its bytes")
    func eachValue() throws {
        for (wire, expected) in Self.sample {
            #expect(try Self.decodeAll([Self.buffer(wire)]) == [expected], "\(wire.debugDescription)")
        }
    }

    @Test("the whole sample decodes the same when split at every byte boundary")
    func everySplit() throws {
        let wire = Self.sample.map(\.0).joined()
        let expected = Self.sample.map(\.1)
        let bytes = Array(wire.utf8)
        for cut in 0...bytes.count {
            let chunks = [ByteBuffer(bytes: bytes[..<cut]), ByteBuffer(bytes: bytes[cut...])]
            #expect(try Self.decodeAll(chunks) == expected, "cut at \(cut)")
        }
        for first in stride(from: 0, through: bytes.count, by: 7) {
            for second in first...bytes.count {
                let chunks = [ByteBuffer(bytes: bytes[..<first]), ByteBuffer(bytes: bytes[first..<second]),
                    ByteBuffer(bytes: bytes[second...])]
                #expect(try Self.decodeAll(chunks) == expected, "cuts at \(first), \(second)")
            }
        }
    }

    @Test("NIO's decoder verifier: drip-fed and coalesced input give the same values")
    func verifier() throws {
        let pairs = Self.sample.map { (Self.buffer($0.0), [$0.1]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { RESPValueDecoder() }
    }

    @Test("a multi-megabyte binary bulk string comes through intact, fed in uneven pieces")
    func largeBulk() throws {
        var value = ByteBuffer()
        var seed: UInt64 = 42
        for _ in 0..<(3 << 20) / 8 {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1
            value.writeInteger(seed)
        }
        var wire = ByteBuffer(string: "$\(value.readableBytes)\r\n")
        wire.writeImmutableBuffer(value)
        wire.writeString("\r\n:7\r\n")
        var chunks: [ByteBuffer] = []
        var size = 1
        while wire.readableBytes > 0 {
            chunks.append(wire.readSlice(length: min(size, wire.readableBytes))!)
            size = size * 3 + 1
        }
        #expect(try Self.decodeAll(chunks) == [.bulkString(value), .integer(7)])
    }

    static let hostile: [(String, RESPProtocolError.Code)] = [
        ("?x\r\n", .unknownType),
        ("+OK\n", .malformedLine),
        (":12a\r\n", .malformedInteger),
        (":+1\r\n", .malformedInteger),
        (":\r\n", .malformedInteger),
        (": 1\r\n", .malformedInteger),
        (":-\r\n", .malformedInteger),
        (":99999999999999999999\r\n", .malformedInteger),
        (":9223372036854775808\r\n", .malformedInteger),
        ("$-2\r\n", .tooLarge),
        ("$1073741824\r\n", .tooLarge),
        ("$3\r\nabcde\r\n", .malformedLine),
        ("*-5\r\n", .tooLarge),
        ("*4294967296\r\n", .tooLarge),
        ("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", .tooDeep),
    ]

    @Test("hostile input throws the right error and never traps", arguments: Self.hostile.indices)
    func hostileInput(index: Int) throws {
        let (wire, code) = Self.hostile[index]
        var buffer = Self.buffer(wire)
        var decoder = RESPValueDecoder(maximumBulkBytes: 1 << 20, maximumArrayCount: 1 << 16)
        #expect {
            while try decoder.decode(buffer: &buffer) != nil {}
        } throws: { ($0 as? RESPProtocolError)?.code == code }
    }

    @Test("a line without CR LF past the cap is refused before it is buffered whole")
    func longLine() throws {
        var decoder = RESPValueDecoder(maximumLineBytes: 100)
        var buffer = Self.buffer("+" + String(repeating: "x", count: 50))
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readerIndex == 0)
        buffer.writeString(String(repeating: "x", count: 100))
        #expect(throws: RESPProtocolError.self) { try decoder.decode(buffer: &buffer) }
    }

    @Test("an incomplete value leaves the reader index where it was")
    func needMoreData() throws {
        var decoder = RESPValueDecoder()
        for wire in ["*2\r\n$3\r\nfoo\r\n", "$10\r\nabc", "*1\r\n", ":12"] {
            var buffer = Self.buffer(wire)
            #expect(try decoder.decode(buffer: &buffer) == nil)
            #expect(buffer.readerIndex == 0)
        }
    }

    @Test("commands encode as arrays of bulk strings; large arguments are not copied")
    func commandEncoding() throws {
        #expect(RESPCommand("SET", "k", "v").encodedBuffer() == Self.buffer("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"))
        let big = ByteBuffer(repeating: 7, count: RESPCommand.inlineLimit)
        let parts = RESPCommand([ByteBuffer(string: "SET"), ByteBuffer(string: "key"), big]).encoded()
        #expect(parts.count == 3)
        #expect(parts[1] == big)
        var decoder = RESPValueDecoder()
        var wire = RESPCommand([ByteBuffer(string: "SET"), ByteBuffer(string: "key"), big]).encodedBuffer()
        let decoded = try decoder.decode(buffer: &wire)
        #expect(decoded == .array([.bulkString(ByteBuffer(string: "SET")), .bulkString(ByteBuffer(string: "key")), .bulkString(big)]))
        #expect(wire.readableBytes == 0)
    }

    @Test("values written with write(to:) decode to themselves")
    func roundTrip() throws {
        var buffer = ByteBuffer()
        for (_, value) in Self.sample { value.write(to: &buffer) }
        var decoder = RESPValueDecoder()
        for (_, value) in Self.sample { #expect(try decoder.decode(buffer: &buffer) == value) }
        #expect(buffer.readableBytes == 0)
    }
}

/// Redis Cluster slots: CRC16-XMODEM and hash tags, against values Redis documents.
struct RedisClusterSlotTests {
    @Test("CRC16-XMODEM of \"123456789\" is 0x31C3 (the specification's check value)")
    func checkValue() {
        #expect(RedisClusterSlot.crc16(Array("123456789".utf8)) == 0x31C3)
    }

    @Test("slots and hash tags follow the cluster specification", arguments: [
        ("foo", 12182), ("bar", 5061), ("{user1000}.following", RedisClusterSlot.of("user1000")),
        ("foo{}{bar}", RedisClusterSlot.of("foo{}{bar}")), ("foo{{bar}}zap", RedisClusterSlot.of("{bar")),
        ("foo{bar}{zap}", RedisClusterSlot.of("bar")),
    ])
    func slots(key: String, slot: Int) {
        #expect(RedisClusterSlot.of(key) == slot)
    }

    @Test("an empty tag hashes the whole key")
    func emptyTag() {
        #expect(RedisClusterSlot.of("foo{}{bar}") == Int(RedisClusterSlot.crc16(Array("foo{}{bar}".utf8)) % 16384))
    }
}
