import Foundation
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Testing

@Suite("Disk tier")
struct LocalDiskTierTests {
    @Test("chunks survive a restart; temporary files are removed; foreign files are left alone")
    func restart() throws {
        let directory = try TemporaryDirectory("lmcache-disk-restart")
        defer { directory.remove() }
        let chunks = (0..<6).map { Fixtures.chunk($0) }
        do {
            let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
            for chunk in chunks { #expect(tier.write(chunk)) }
        }
        try Data("partial".utf8).write(to: URL(filePath: directory.path + "/.tmp-123-4-abc.lmkv"))
        try Data("notes".utf8).write(to: URL(filePath: directory.path + "/README.txt"))
        let reopened = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
        #expect(reopened.statistics.count == 6)
        for chunk in chunks {
            #expect(reopened.read(chunk.key)?.contentEquals(chunk) == true)
        }
        #expect(!directory.files().contains { $0.hasPrefix(".tmp-") })
        #expect(directory.files().contains("README.txt"))
    }

    @Test("a corrupted payload byte makes that chunk a miss, and its file is deleted")
    func corruptPayload() throws {
        let directory = try TemporaryDirectory("lmcache-disk-corrupt")
        defer { directory.remove() }
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
        let good = Fixtures.chunk(1)
        let bad = Fixtures.chunk(2)
        tier.write(good)
        tier.write(bad)
        let path = directory.path + "/\(bad.key.hash)-\(bad.key.tokenCount).lmkv"
        var bytes = try Data(contentsOf: URL(filePath: path))
        bytes[bytes.count - 100] ^= 0x01
        try bytes.write(to: URL(filePath: path))
        #expect(tier.read(bad.key) == nil)
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(!tier.containsNow(bad.key))
        #expect(tier.read(good.key)?.contentEquals(good) == true)
        #expect(tier.statistics.corrupt == 1)
    }

    @Test("corrupt, truncated and misnamed chunk files found at start are deleted, never served")
    func corruptAtStart() throws {
        let directory = try TemporaryDirectory("lmcache-disk-start")
        defer { directory.remove() }
        let chunks = (0..<4).map { Fixtures.chunk($0) }
        do {
            let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
            for chunk in chunks { tier.write(chunk) }
        }
        let names = chunks.map { "\($0.key.hash)-\($0.key.tokenCount).lmkv" }
        // 0: header byte flipped; 1: truncated; 2: renamed to another chunk's name pattern; 3: intact.
        var header = try Data(contentsOf: URL(filePath: directory.path + "/" + names[0]))
        header[40] ^= 0xff
        try header.write(to: URL(filePath: directory.path + "/" + names[0]))
        let full = try Data(contentsOf: URL(filePath: directory.path + "/" + names[1]))
        try full.prefix(5000).write(to: URL(filePath: directory.path + "/" + names[1]))
        try FileManager.default.moveItem(
            atPath: directory.path + "/" + names[2],
            toPath: directory.path + "/00000000000000000000000000000000-16.lmkv"
        )
        try Data(count: 10).write(to: URL(filePath: directory.path + "/ffffffffffffffffffffffffffffffff-16.lmkv"))
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
        #expect(tier.statistics.count == 1)
        #expect(tier.statistics.corrupt == 4)
        #expect(tier.read(chunks[3].key)?.contentEquals(chunks[3]) == true)
        for chunk in chunks.prefix(3) { #expect(tier.read(chunk.key) == nil) }
        #expect(directory.files() == [names[3]])
    }

    @Test("files of an earlier format are deleted at start with one notice, not counted corrupt; the rest is served")
    func earlierFormat() throws {
        let directory = try TemporaryDirectory("lmcache-disk-earlier")
        defer { directory.remove() }
        let chunks = (0..<3).map { Fixtures.chunk($0) }
        do {
            let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
            for chunk in chunks { #expect(tier.write(chunk)) }
        }
        let names = chunks.map { "\($0.key.hash)-\($0.key.tokenCount).lmkv" }
        // 0: the magic of the disk files before version 3 (LMCKVDSK); 1: this magic, version 2.
        var first = try Data(contentsOf: URL(filePath: directory.path + "/" + names[0]))
        first.replaceSubrange(0..<8, with: Array("LMCKVDSK".utf8))
        try first.write(to: URL(filePath: directory.path + "/" + names[0]))
        var second = try Data(contentsOf: URL(filePath: directory.path + "/" + names[1]))
        second[4] = 2
        try second.write(to: URL(filePath: directory.path + "/" + names[1]))
        let log = LogRecorder()
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20, logger: log.logger)
        #expect(tier.statistics.count == 1 && tier.statistics.corrupt == 0)
        #expect(log.all.filter { $0.contains("earlier format") }.count == 1, "\(log.all)")
        #expect(!log.contains("corrupt chunk file deleted"))
        #expect(directory.files() == [names[2]])
        #expect(tier.read(chunks[2].key)?.contentEquals(chunks[2]) == true)
    }

    @Test("a smaller budget at restart evicts down to it")
    func shrinkAtStart() throws {
        let directory = try TemporaryDirectory("lmcache-disk-shrink")
        defer { directory.remove() }
        do {
            let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
            for index in 0..<10 { tier.write(Fixtures.chunk(index)) }
        }
        let tier = try LocalDiskTier(directory: directory.path, capacity: 3 * 6144)
        #expect(tier.statistics.count == 3)
        #expect(tier.statistics.usedBytes <= 3 * 6144)
        #expect(directory.files().count == 3)
    }

    @Test("a full disk pauses writes, its chunks are still served, and writes resume after the pause")
    func fullDisk() throws {
        let directory = try TemporaryDirectory("lmcache-disk-full")
        defer { directory.remove() }
        // A real full file system: a 256 KiB tmpfs (tests run as root, as CI does).
        let unmount = try Self.mount(["-t", "tmpfs", "-o", "size=256k", "tmpfs"], at: directory.path)
        defer { unmount() }
        let tier = try LocalDiskTier(directory: directory.path, capacity: 64 << 20, fullDiskPause: .milliseconds(300))
        var written = 0
        for index in 0..<100 where tier.write(Fixtures.chunk(index)) { written += 1 }
        #expect(written > 0 && written < 100)
        #expect(!tier.statistics.writable)
        #expect(!directory.files().contains { $0.hasPrefix(".tmp-") }, "failed writes leave no temporary files")
        // The chunks already written are served while writes are paused.
        #expect(tier.read(Fixtures.chunk(0).key)?.contentEquals(Fixtures.chunk(0)) == true)
        #expect(!tier.write(Fixtures.chunk(500)), "writes are paused")

        // Room comes back (here: the tier's own files); after the pause writes go through again.
        for index in 0..<written { tier.removeNow(Fixtures.chunk(index).key) }
        Thread.sleep(forTimeInterval: 0.4)
        #expect(tier.write(Fixtures.chunk(500)))
        #expect(tier.statistics.writable)
        #expect(tier.read(Fixtures.chunk(500).key)?.contentEquals(Fixtures.chunk(500)) == true)
    }

    @Test("a read-only file system stops writes for good; the chunks on it are still served")
    func readOnly() throws {
        let directory = try TemporaryDirectory("lmcache-disk-readonly")
        defer { directory.remove() }
        let unmount = try Self.mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs"], at: directory.path)
        defer { unmount() }
        #expect(try LocalDiskTier(directory: directory.path, capacity: 64 << 20).write(Fixtures.chunk(1)))
        let remount = Process()
        remount.executableURL = URL(filePath: "/bin/mount")
        remount.arguments = ["-o", "remount,ro", directory.path]
        try remount.run()
        remount.waitUntilExit()
        try #require(remount.terminationStatus == 0)
        let tier = try LocalDiskTier(directory: directory.path, capacity: 64 << 20, fullDiskPause: .milliseconds(1))
        #expect(tier.read(Fixtures.chunk(1).key)?.contentEquals(Fixtures.chunk(1)) == true)
        #expect(!tier.write(Fixtures.chunk(2)))
        Thread.sleep(forTimeInterval: 0.05)
        #expect(!tier.write(Fixtures.chunk(3)), "a refusal that retrying will not cure stops writes for good")
        #expect(!tier.statistics.writable)
        #expect(tier.read(Fixtures.chunk(1).key)?.contentEquals(Fixtures.chunk(1)) == true)
    }

    /// Mounts a file system (`arguments` before the mount point) on `path`; returns the unmount.
    /// Needs root, as the tests have (CI runs them as root).
    static func mount(_ arguments: [String], at path: String) throws -> () -> Void {
        let mount = Process()
        mount.executableURL = URL(filePath: "/bin/mount")
        mount.arguments = arguments + [path]
        try mount.run()
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0, "mount \(arguments) needs root")
        return {
            let umount = Process()
            umount.executableURL = URL(filePath: "/bin/umount")
            umount.arguments = [path]
            try? umount.run()
            umount.waitUntilExit()
        }
    }

    /// How many pages of `path` from `offset` on the page cache holds (`mincore` over a mapping).
    static func residentPages(_ path: String, from offset: Int) throws -> (resident: Int, pages: Int) {
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        var info = stat()
        try #require(fstat(fd, &info) == 0)
        let length = Int(info.st_size) - offset
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let pages = (length + page - 1) / page
        let mapping = try #require(mmap(nil, length, PROT_READ, MAP_SHARED, fd, off_t(offset)))
        defer { munmap(mapping, length) }
        var vector = [UInt8](repeating: 0, count: pages)
        try #require(mincore(mapping, length, &vector) == 0)
        return (vector.filter { $0 & 1 != 0 }.count, pages)
    }

    @Test("direct I/O (use_odirect): same files and bytes as buffered I/O, corrupt files still misses, no payload pages in the page cache")
    func directIO() throws {
        let directory = try TemporaryDirectory("lmcache-disk-direct")
        defer { directory.remove() }
        // A payload of 1.5 MiB + 136 bytes: more than one direct read and not a whole number of pages.
        let layout = KVLayout(layers: 3, kvHeads: 1, headDim: 17, dtype: .float32)
        let big = Fixtures.chunk(1, tokens: 1928, layout: layout)
        let small = Fixtures.chunk(2)
        let buffered = Fixtures.chunk(3)
        let lossless = Fixtures.chunk(4, tokens: 300, layout: KVLayout(layers: 2, kvHeads: 1, headDim: 8, dtype: .float16))
        let name = { (chunk: KVChunk) in directory.path + "/\(chunk.key.hash)-\(chunk.key.tokenCount).lmkv" }
        // Resident payload pages of an unencoded chunk's file (its header comes first, in whole pages).
        let resident = { (chunk: KVChunk) throws -> Int in
            let size = try #require(try FileManager.default.attributesOfItem(atPath: name(chunk))[.size] as? Int)
            return try Self.residentPages(name(chunk), from: size - chunk.byteCount).resident
        }
        do {
            let plain = try LocalDiskTier(directory: directory.path, capacity: 64 << 20)
            #expect(plain.write(buffered))
            // Buffered writes leave the payload in the page cache: the measurement below can see pages.
            #expect(try resident(buffered) > 0)
        }
        #expect(try LocalDiskTier(directory: directory.path, capacity: 64 << 20, directIO: true, serde: .lossless)
            .write(lossless))
        let tier = try LocalDiskTier(directory: directory.path, capacity: 64 << 20, directIO: true)
        #expect(tier.write(big) && tier.write(small))
        for chunk in [big, small] {
            // At most the last, partial page: cutting the file to its length zeroes that page's tail.
            #expect(try resident(chunk) <= 1, "a direct write bypasses the page cache")
            let reader = try #require(tier.open(chunk.key))
            #expect(reader.isDirect)
        }
        for chunk in [big, small, buffered, lossless] { #expect(tier.read(chunk.key)?.contentEquals(chunk) == true) }
        #expect(try resident(big) <= 1, "a direct read bypasses the page cache")
        // A buffered tier reads what the direct one wrote, byte for byte (one format).
        let plain = try LocalDiskTier(directory: directory.path, capacity: 64 << 20)
        for chunk in [big, small, lossless] { #expect(plain.read(chunk.key)?.contentEquals(chunk) == true) }
        let size = try Data(contentsOf: URL(filePath: name(big))).count
        #expect(size > big.byteCount && (size - big.byteCount) % 4096 == 0, "a header in whole pages, then the payload, no padding")

        // Corrupt and truncated payloads are misses, and their files go.
        var bytes = try Data(contentsOf: URL(filePath: name(big)))
        bytes[bytes.count - 300_000] ^= 0x01
        try bytes.write(to: URL(filePath: name(big)))
        let smallFile = try Data(contentsOf: URL(filePath: name(small)))
        try smallFile.prefix(smallFile.count - 1000).write(to: URL(filePath: name(small)))
        let reopened = try LocalDiskTier(directory: directory.path, capacity: 64 << 20, directIO: true)
        #expect(reopened.read(big.key) == nil)
        #expect(!FileManager.default.fileExists(atPath: name(big)))
        #expect(reopened.read(small.key) == nil)
        #expect(reopened.read(buffered.key)?.contentEquals(buffered) == true)
    }

    @Test("a file system that refuses O_DIRECT (ramfs) gets buffered I/O, and the bytes are right")
    func directIORefused() throws {
        let directory = try TemporaryDirectory("lmcache-disk-ramfs")
        defer { directory.remove() }
        let unmount = try Self.mount(["-t", "ramfs", "ramfs"], at: directory.path)
        defer { unmount() }
        try #require(open(directory.path + "/probe", O_WRONLY | O_CREAT | 0o40000, 0o644) < 0 && errno == EINVAL,
            "ramfs is expected to refuse O_DIRECT")
        unlink(directory.path + "/probe")
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 20, directIO: true)
        let chunks = (0..<3).map { Fixtures.chunk($0) }
        for chunk in chunks { #expect(tier.write(chunk)) }
        for chunk in chunks {
            #expect(tier.open(chunk.key)?.isDirect == false)
            #expect(tier.read(chunk.key)?.contentEquals(chunk) == true)
        }
        #expect(!directory.files().contains { $0.hasPrefix(".tmp-") })
    }
}
