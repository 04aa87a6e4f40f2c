import ArgumentParser
import LMCacheCore
import LMCacheStorage

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `lmcache debug …`: commands for crash and recovery tests; not for users.
struct DebugCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug",
        abstract: "Commands used by crash and recovery tests.",
        shouldDisplay: false,
        subcommands: [DebugWriteDiskCommand.self]
    )
}

/// Writes synthetic chunks to a disk tier one after another, printing each key once its write
/// has completed, until killed or done.
struct DebugWriteDiskCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write-disk")

    @Option var directory: String
    @Option var chunks = 1000
    @Option var tokens = 256
    @Option var capacityGib: Double = 4

    func run() async throws {
        let tier = try LocalDiskTier(directory: directory, capacity: Int(capacityGib * Double(1 << 30)))
        let layout = KVLayout(layers: 18, kvHeads: 1, headDim: 256, dtype: .float16)
        for index in 0..<chunks {
            let chunk = SyntheticChunks.chunk(index, tokens: tokens, layout: layout)
            guard tier.write(chunk) else { throw CommandFailure("write \(index) failed") }
            print("\(index) \(chunk.key)")
            fflush(nil)
        }
    }
}
