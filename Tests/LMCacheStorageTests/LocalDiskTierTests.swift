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

    @Test("a full disk switches the tier off with serving going on")
    func fullDisk() throws {
        let directory = try TemporaryDirectory("lmcache-disk-full")
        defer { directory.remove() }
        // A real full file system: a 256 KiB tmpfs (tests run as root, as CI does).
        let mount = Process()
        mount.executableURL = URL(filePath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=256k", "tmpfs", directory.path]
        try mount.run()
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0, "mounting a tmpfs needs root")
        defer {
            let umount = Process()
            umount.executableURL = URL(filePath: "/bin/umount")
            umount.arguments = [directory.path]
            try? umount.run()
            umount.waitUntilExit()
        }
        let tier = try LocalDiskTier(directory: directory.path, capacity: 64 << 20)
        var written = 0
        for index in 0..<100 where tier.write(Fixtures.chunk(index)) { written += 1 }
        #expect(written > 0 && written < 100)
        #expect(!tier.statistics.enabled)
        #expect(!tier.containsNow(Fixtures.chunk(0).key), "a switched-off tier serves nothing")
        #expect(!tier.write(Fixtures.chunk(500)))
        #expect(!directory.files().contains { $0.hasPrefix(".tmp-") }, "failed writes leave no temporary files")
    }
}
