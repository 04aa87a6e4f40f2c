import Foundation
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Testing

/// Float16 KV that looks like a model's: values spread around zero with a scale per channel, some
/// channels much larger than the rest.
enum RealisticKV {
    static let layout = KVLayout(layers: 3, kvHeads: 2, headDim: 32, dtype: .float16)

    static func chunk(_ index: Int, tokens count: Int = 32, layout: KVLayout = layout) -> KVChunk {
        let tokens = (0..<count).map { Int32(truncatingIfNeeded: index &* 7_777 &+ $0) }
        let keyer = ChunkKeyer(model: Fixtures.model, layout: layout, chunkSize: count)
        let channels = layout.kvHeads * layout.headDim
        var state = UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15
        func uniform() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 24)
        }
        let storage = HeapChunkStorage(count: layout.byteCount(tokens: count)) { (bytes: UnsafeMutableRawBufferPointer) in
            let values = bytes.bindMemory(to: UInt16.self)
            for i in values.indices {
                let channel = i % channels
                let scale: Float = channel % 13 == 0 ? 8 : 0.5 + Float(channel % 5) * 0.25
                let gaussian = (uniform() + uniform() + uniform() + uniform() - 2) * 1.7
                values[i] = Float16(gaussian * scale).bitPattern
            }
        }
        return KVChunk(key: keyer.keys(for: tokens)[0], tokens: tokens, layout: layout, storage: storage)
    }

    /// ‖a − b‖ / ‖a‖ over the float16 values of two chunks of one layout.
    static func relativeError(_ a: KVChunk, _ b: KVChunk) -> Double {
        a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in
                let u = x.bindMemory(to: UInt16.self)
                let v = y.bindMemory(to: UInt16.self)
                var difference = 0.0
                var norm = 0.0
                for i in u.indices {
                    let p = Double(Float16(bitPattern: u[i]))
                    let q = Double(Float16(bitPattern: v[i]))
                    difference += (p - q) * (p - q)
                    norm += p * p
                }
                return (difference / norm).squareRoot()
            }
        }
    }
}

@Suite("KV serdes")
struct KVSerdeTests {
    /// The largest relative error each serde may introduce on ``RealisticKV`` chunks.
    static func tolerance(_ serde: KVSerde) -> Double {
        switch serde {
        case .naive, .lossless: 0
        case .q8: 0.02
        case .cachegen: 0.25
        }
    }

    static func fileBytes(_ directory: TemporaryDirectory) throws -> Int {
        try directory.files().filter { $0.hasSuffix(".lmkv") }.reduce(0) { total, name in
            let attributes = try FileManager.default.attributesOfItem(atPath: directory.path + "/" + name)
            return total + (attributes[.size] as! Int)
        }
    }

    @Test("a disk tier of each serde reads back what it wrote (bit for bit when lossless), and so does a tier of any other serde", arguments: KVSerde.allCases)
    func diskRoundTrip(serde: KVSerde) throws {
        let directory = try TemporaryDirectory("lmcache-serde-\(serde)")
        defer { directory.remove() }
        let chunks = (0..<4).map { RealisticKV.chunk($0, tokens: 256) }
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 26, serde: serde)
        for chunk in chunks { #expect(tier.write(chunk)) }
        let payload = chunks.reduce(0) { $0 + $1.byteCount }
        let stored = try Self.fileBytes(directory)
        if serde != .naive && serde != .lossless {
            #expect(Double(stored) < 0.6 * Double(payload), "a lossy serde stores at most 0.6× the float16 bytes")
        }
        for reader in KVSerde.allCases {
            let other = try LocalDiskTier(directory: directory.path, capacity: 1 << 26, serde: reader)
            for chunk in chunks {
                let back = try #require(other.read(chunk.key), "\(reader) reading \(serde)")
                #expect(back.tokens == chunk.tokens)
                #expect(back.byteCount == chunk.byteCount)
                if serde.isLossless {
                    #expect(back.contentEquals(chunk))
                } else {
                    let error = RealisticKV.relativeError(chunk, back)
                    #expect(error > 0 && error < Self.tolerance(serde), "relative error \(error)")
                }
            }
        }
        #expect(tier.statistics.corrupt == 0)
    }

    @Test("float32 KV is stored as it is whatever the serde")
    func otherDTypes() throws {
        let directory = try TemporaryDirectory("lmcache-serde-f32")
        defer { directory.remove() }
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20, serde: .cachegen)
        let chunk = Fixtures.chunk(3)
        #expect(tier.write(chunk))
        #expect(tier.read(chunk.key)?.contentEquals(chunk) == true)
        #expect(try Self.fileBytes(directory) == 4096 + chunk.byteCount)
    }

    @Test("an encoded file with a flipped payload byte is a miss and is deleted", arguments: [KVSerde.lossless, .q8, .cachegen])
    func corruptEncoded(serde: KVSerde) throws {
        let directory = try TemporaryDirectory("lmcache-serde-corrupt")
        defer { directory.remove() }
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 22, serde: serde)
        let chunk = RealisticKV.chunk(7, tokens: 64)
        #expect(tier.write(chunk))
        let path = directory.path + "/\(chunk.key.hash)-\(chunk.key.tokenCount).lmkv"
        var bytes = try Data(contentsOf: URL(filePath: path))
        bytes[bytes.count - 10] ^= 0x40
        try bytes.write(to: URL(filePath: path))
        #expect(tier.read(chunk.key) == nil)
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(tier.statistics.corrupt == 1)
    }

    @Test("a stream that passes its checksum but is not a valid stream for its layout is a miss")
    func undecodableStream() throws {
        let directory = try TemporaryDirectory("lmcache-serde-stream")
        defer { directory.remove() }
        let chunk = RealisticKV.chunk(9, tokens: 64)
        do {
            // Written by a lossless tier, then the stream's header claims another codec.
            let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 22, serde: .lossless)
            #expect(tier.write(chunk))
        }
        let path = directory.path + "/\(chunk.key.hash)-\(chunk.key.tokenCount).lmkv"
        let bytes = try Data(contentsOf: URL(filePath: path))
        let headerLength = Int(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self) })
        var payload = [UInt8](bytes[headerLength...])
        for offset in 24..<min(payload.count, 64) { payload[offset] = 0xFF }
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: headerLength, alignment: 64)
        defer { header.deallocate() }
        payload.withUnsafeBytes { stream in
            ChunkFormat.writeHeader(
                hash: chunk.key.hash,
                content: .kv(tokens: chunk.tokens, layout: chunk.layout, modelName: chunk.key.modelName, codec: KVCodec.id(.lossless)),
                payloadLength: stream.count, payloadChecksum: ChunkChecksum.payload(stream), into: header
            )
        }
        try (Data(header) + Data(payload)).write(to: URL(filePath: path))
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 22)
        #expect(tier.containsNow(chunk.key), "the header is valid")
        #expect(tier.read(chunk.key) == nil)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("local_disk_serde and remote_serde parse; lossy serdes of the tiers that are on name the key identity")
    func configuration() throws {
        var config = try ConfigurationLoader.load(
            environment: ["LMCACHE_LOCAL_DISK_SERDE": "lossless", "LMCACHE_REMOTE_SERDE": "q8"]
        ).configuration
        #expect(config.localDiskSerde == .lossless && config.remoteSerde == .q8)
        #expect(config.lossySerdeIdentity == nil, "no remote tier: q8 stores nothing")
        config.remoteURL = try RemoteURL(parsing: "redis://127.0.0.1:6379")
        #expect(config.lossySerdeIdentity == "q8")
        config.localDisk = "/tmp/x"
        config.maxLocalDiskSize = 1
        config.localDiskSerde = .cachegen
        #expect(config.lossySerdeIdentity == "cachegen+q8")
        config.remoteSerde = .lossless
        #expect(config.lossySerdeIdentity == "cachegen")
        let error = try #require(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(environment: ["LMCACHE_LOCAL_DISK_SERDE": "zip"])
        }
        #expect("\(error)".contains("local_disk_serde") && "\(error)".contains("naive, lossless, q8, cachegen"))
    }
}
