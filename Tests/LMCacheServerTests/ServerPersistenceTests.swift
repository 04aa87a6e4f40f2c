import Foundation
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import LMCacheWire
import NIOCore
import Testing

@testable import LMCacheServer

/// `lmcache_server` with a disk directory (`local_disk`): values survive a restart and eviction
/// from memory, and a corrupt file is a miss with a log line.
@Suite("lm:// server persistence")
struct ServerPersistenceTests {
    /// A value as a test stores it and expects it back.
    struct Value {
        var key: String
        var bytes: [UInt8]
        var format: Int32
        var dtype: Int32
        var shape: LMShape

        init(_ index: Int, count: Int) {
            key = "model@1@0@\(String(index, radix: 16))@half"
            bytes = randomBytes(seed: UInt64(index) + 1, count: count)
            format = Int32(index % 3 + 1)
            dtype = Int32(index % 4 + 1)
            shape = LMShape([2, 24, Int32(index), 1024])
        }
    }

    /// Where a test's server lives: a temporary directory (its disk tier and log) and a port.
    struct Place {
        let directory: TemporaryDirectory
        let port: Int
        var log: URL { directory.url.appending(path: "server.log") }
        var disk: String { directory.path + "/values" }

        init() throws {
            directory = try TemporaryDirectory()
            port = try freeLoopbackPort()
        }
    }

    /// A server process with a disk directory and its log file.
    struct Server {
        let process: Process
        let log: URL

        /// Starts `lmcache_server` on `place` and waits until it answers HEALTH.
        static func start(in place: Place, memoryGiB: Double = 0.25) async throws -> Server {
            let log = place.log
            let disk = place.disk
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let process = Process()
            process.executableURL = builtExecutable("lmcache_server")
            process.arguments = ["127.0.0.1", "\(place.port)"]
            process.environment = [
                "LMCACHE_SERVER_MAX_SIZE": "\(memoryGiB)",
                "LMCACHE_LOCAL_DISK": disk,
                "LMCACHE_MAX_LOCAL_DISK_SIZE": "1",
                "LMCACHE_LOG_LEVEL": "info",
            ]
            let handle = try FileHandle(forWritingTo: log)
            handle.seekToEndOfFile()
            process.standardError = handle
            try process.run()
            let server = Server(process: process, log: log)
            #expect(await ServerPersistenceTests.waitUntilServing(port: place.port))
            return server
        }

        /// Sends SIGTERM and waits; `true` when the process exited with status 0.
        func stop() async -> Bool {
            kill(process.processIdentifier, SIGTERM)
            await process.exited()
            return process.terminationReason == .exit && process.terminationStatus == 0
        }

        func kill9() {
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }

        var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
    }

    static func put(_ values: [Value], port: Int) async throws {
        try await withRawConnection(port: port) { connection in
            for value in values {
                try await connection.send(
                    LMRequestHeader(
                        command: .put,
                        key: value.key,
                        length: Int32(value.bytes.count),
                        format: value.format,
                        dtype: value.dtype,
                        shape: value.shape
                    ),
                    payload: value.bytes
                )
            }
            // Requests are answered in order: once HEALTH is, every PUT before it is stored.
            try await connection.send(LMRequestHeader(command: .health, key: "health"))
            #expect(try await connection.readReply()?.0.isSuccess == true)
        }
    }

    /// The reply to GET `key`: `nil` on a miss.
    static func get(_ key: String, port: Int) async throws -> (LMReplyHeader, [UInt8])? {
        try await withRawConnection(port: port) { connection in
            try await connection.send(LMRequestHeader(command: .get, key: key))
            let reply = try #require(try await connection.readReply())
            return reply.0.isSuccess ? reply : nil
        }
    }

    static func matches(_ reply: (LMReplyHeader, [UInt8])?, _ value: Value) -> Bool {
        guard let (header, bytes) = reply else { return false }
        return bytes == value.bytes && header.format == value.format && header.dtype == value.dtype
            && header.shape == value.shape && header.length == Int32(value.bytes.count)
    }

    static func waitUntilServing(port: Int) async -> Bool {
        await eventually {
            (try? await withRawConnection(port: port) { connection in
                try await connection.send(LMRequestHeader(command: .health, key: "health"))
                return try await connection.readReply()?.0.isSuccess == true
            }) == true
        }
    }

    @Test("a restarted server returns the same bytes, format, dtype and shape")
    func restartKeepsValues() async throws {
        let place = try Place()
        let port = place.port
        let values = [0, 1, 1000, 4096, 300_000, 1 << 20].enumerated().map { Value($0.offset, count: $0.element) }

        var server = try await Server.start(in: place)
        defer { server.kill9() }
        try await Self.put(values, port: port)
        // A second PUT of a key replaces its value, on disk too.
        var replaced = Value(40, count: 5000)
        replaced.key = values[2].key
        try await Self.put([replaced], port: port)
        #expect(await server.stop())

        server = try await Server.start(in: place)
        for value in values where value.key != replaced.key {
            #expect(Self.matches(try await Self.get(value.key, port: port), value), "\(value.key)")
        }
        #expect(Self.matches(try await Self.get(replaced.key, port: port), replaced))
        #expect(try await Self.get("model@1@0@absent@half", port: port) == nil)
        #expect(await server.stop())
    }

    @Test("SIGKILL: every value written to disk survives exact; killed mid-stream, what survives is a prefix of the PUTs")
    func killKeepsWrittenValues() async throws {
        let place = try Place()
        let port = place.port
        let chunkFiles = { () -> Int in
            ((try? FileManager.default.contentsOfDirectory(atPath: place.disk)) ?? []).filter {
                $0.hasSuffix(".lmkv") && !$0.hasPrefix(".")
            }.count
        }
        let written = (0..<6).map { Value(200 + $0, count: 100_000 + $0) }
        var server = try await Server.start(in: place)
        defer { server.kill9() }
        try await Self.put(written, port: port)
        // Written once its file is in place (a file appears under its name only when complete).
        #expect(await eventually { chunkFiles() == written.count })
        server.kill9()

        server = try await Server.start(in: place)
        for value in written { #expect(Self.matches(try await Self.get(value.key, port: port), value), "\(value.key)") }

        // Killed while a client streams PUTs: writes happen in PUT order, and a file is renamed
        // into place only when complete, so after a restart the stream's values on disk are a
        // prefix of it, each exact, and no temporary file is left.
        let stream = (0..<1500).map { Value(1000 + $0, count: 64 << 10) }
        let writer = Task { try? await Self.put(stream, port: port) }
        #expect(await eventually { chunkFiles() >= written.count + 20 })
        server.kill9()
        _ = await writer.value
        server = try await Server.start(in: place)
        var present: [Bool] = []
        for value in stream {
            let reply = try await Self.get(value.key, port: port)
            if let reply { #expect(Self.matches(reply, value), "\(value.key)") }
            present.append(reply != nil)
        }
        let survivors = present.prefix { $0 }.count
        #expect(survivors >= 20)
        #expect(!present[survivors...].contains(true), "values after a lost one survived: not a prefix")
        #expect(survivors < stream.count, "the kill came after the whole stream; nothing was tested mid-write")
        for value in written { #expect(Self.matches(try await Self.get(value.key, port: port), value)) }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: place.disk).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty, "temporary files after a restart: \(leftovers)")
        #expect(await server.stop())
    }

    @Test("a corrupt file on disk is a miss with a log line; the server keeps serving")
    func corruptFileIsAMiss() async throws {
        let place = try Place()
        let (disk, port) = (place.disk, place.port)
        let values = (0..<3).map { Value(10 + $0, count: 64 << 10) }

        var server = try await Server.start(in: place)
        defer { server.kill9() }
        try await Self.put(values, port: port)
        #expect(await server.stop())

        // Flip one byte in the middle of the first value's file (its payload, past the header).
        let victim = LMDiskStore.hash(of: values[0].key)
        let files = try FileManager.default.contentsOfDirectory(atPath: disk)
        let name = try #require(files.first { $0.hasPrefix("\(victim)") })
        let handle = try FileHandle(forUpdating: URL(filePath: disk + "/" + name))
        try handle.seek(toOffset: 4096 + 30_000)
        let original = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: 4096 + 30_000)
        try handle.write(contentsOf: [original ^ 0xFF])
        try handle.close()

        server = try await Server.start(in: place)
        #expect(try await Self.get(values[0].key, port: port) == nil)
        #expect(server.logText.contains("corrupt chunk file deleted"))
        #expect(!FileManager.default.fileExists(atPath: disk + "/" + name))
        for value in values.dropFirst() {
            #expect(Self.matches(try await Self.get(value.key, port: port), value))
        }
        #expect(await server.stop())
    }

    @Test("values evicted from memory are served from disk")
    func evictionKeepsDataOnDisk() async throws {
        let place = try Place()
        let port = place.port
        // Sixteen 1 MiB values through a 4 MiB memory budget: most leave memory.
        let values = (0..<16).map { Value(100 + $0, count: 1 << 20) }

        let server = try await Server.start(in: place, memoryGiB: 4.0 / 1024)
        defer { server.kill9() }
        try await Self.put(values, port: port)
        for value in values {
            // Disk writes are queued behind the PUT: poll until this one is there.
            #expect(
                await eventually { Self.matches(try? await Self.get(value.key, port: port), value) },
                "\(value.key)"
            )
        }
        #expect(await server.stop())
    }

    @Test("a value is a record of the value kind: its key and description in the header, its bytes unpadded after it")
    func valueRecords() async throws {
        let directory = try TemporaryDirectory()
        let values = [Value(7, count: 12_345), Value(8, count: 0), Value(9, count: 1 << 20)]
        do {
            let store = try LMDiskStore(directory: directory.path, capacity: 64 << 20)
            for value in values { await store.persist(value.key, Self.stored(value)) }
            await store.flush()
        }
        for value in values {
            let path = directory.path + "/\(LMDiskStore.hash(of: value.key))-0.lmkv"
            let file = try [UInt8](Data(contentsOf: URL(filePath: path)))
            let header = try file.withUnsafeBytes {
                try ChunkFormat.parseHeader($0, recordSize: file.count, alignment: ChunkFormat.diskAlignment).get()
            }
            let expected = ChunkFormat.ValueDescription(
                key: value.key, format: value.format, dtype: value.dtype,
                shape: [value.shape.d0, value.shape.d1, value.shape.d2, value.shape.d3])
            #expect(header.content == .value(expected))
            #expect(Array(file[header.headerLength...]) == value.bytes, "the payload is the value's bytes, nothing more")
        }
        // Reopened (the index rebuilt from the files), every value reads back.
        let store = try LMDiskStore(directory: directory.path, capacity: 64 << 20)
        for value in values {
            let loaded = try #require(await store.load(value.key, allocator: ByteBufferAllocator()))
            #expect(Array(loaded.payload.readableBytesView) == value.bytes)
            #expect(loaded.format == value.format && loaded.dtype == value.dtype && loaded.shape == value.shape)
        }
        // A record under a key's hash that names another key (a collision) is a miss, not its bytes.
        let other = ChunkFormat.ValueDescription(key: "another", format: 1, dtype: 1, shape: [1, 0, 0, 0])
        #expect([UInt8](repeating: 1, count: 8).withUnsafeBytes {
            store.tier.writeValue(hash: LMDiskStore.hash(of: values[0].key), other, payload: $0)
        })
        #expect(await store.load(values[0].key, allocator: ByteBufferAllocator()) == nil)
        #expect(await store.load("absent", allocator: ByteBufferAllocator()) == nil)
    }

    static func stored(_ value: Value) -> LMStoredValue {
        LMStoredValue(payload: ByteBuffer(bytes: value.bytes), format: value.format, dtype: value.dtype, shape: value.shape)
    }
}

/// `count` deterministic pseudo-random bytes (SplitMix64, eight bytes per step).
func randomBytes(seed: UInt64, count: Int) -> [UInt8] {
    var state = seed
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { buffer in
        var offset = 0
        while offset < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            withUnsafeBytes(of: z.littleEndian) { word in
                let n = min(8, count - offset)
                buffer.baseAddress!.advanced(by: offset).copyMemory(from: word.baseAddress!, byteCount: n)
            }
            offset += 8
        }
    }
    return bytes
}
