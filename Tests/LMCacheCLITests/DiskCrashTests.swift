import Foundation
import LMCacheCore
import LMCacheStorage
import Testing

@Suite("Disk tier crash safety")
struct DiskCrashTests {
    @Test("SIGKILL in the middle of a stream of writes: every completed chunk is served exactly, nothing partial")
    func killedWriter() throws {
        let directory = FileManager.default.temporaryDirectory
            .appending(path: "lmcache-crash-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let process = Process()
        process.executableURL = LMCacheExecutable.url
        process.arguments = ["debug", "write-disk", "--directory", directory, "--chunks", "100000", "--tokens", "256"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Read completed writes as they are reported, then kill the writer mid-stream.
        var buffer = Data()
        var completed: [(Int, String)] = []
        while completed.count < 40 {
            let data = out.fileHandleForReading.availableData
            if data.isEmpty { break }
            buffer.append(data)
            while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                let parts = line.split(separator: " ")
                if parts.count == 2, let index = Int(parts[0]) { completed.append((index, String(parts[1]))) }
            }
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        try #require(completed.count >= 40)

        let layout = KVLayout(layers: 18, kvHeads: 1, headDim: 256, dtype: .float16)
        let tier = try LocalDiskTier(directory: directory, capacity: 4 << 30)
        for (index, keyText) in completed {
            let expected = SyntheticChunks.chunk(index, tokens: 256, layout: layout)
            #expect(expected.key.description == keyText)
            let hit = try #require(tier.read(expected.key), "chunk \(index) was reported written")
            #expect(hit.contentEquals(expected))
        }
        // Whatever else is indexed is complete too; nothing temporary survives the restart.
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(!files.contains { $0.hasPrefix(".tmp-") })
        #expect(tier.statistics.count == files.count)
        #expect(tier.statistics.count >= completed.count && tier.statistics.count <= completed.count + 1)
    }
}
