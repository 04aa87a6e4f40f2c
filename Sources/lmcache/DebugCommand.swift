import ArgumentParser
import Inference
import Kernels
import LMCacheCommandSupport
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
        subcommands: [DebugWriteDiskCommand.self, DebugFingerprintCommand.self]
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

/// Runs a fixed pseudo-random prompt through the engine (a prefill, then greedy decode steps) and prints
/// hashes of every KV byte and every logit, so that tests can compare runs with different thread counts
/// (or other settings that must not change results) across processes.
struct DebugFingerprintCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fingerprint")

    @OptionGroup var modelArguments: ModelArguments
    @Option var promptTokens = 600
    @Option var decodeTokens = 4
    @Option(help: "Prefill the prompt in pieces of these sizes (comma-separated; the last piece takes the rest).")
    var pieces: String = ""
    @Option(help: "Run the prompt's last N tokens one decode step each.")
    var tailDecode = 0

    func run() async throws {
        let loaded = try modelArguments.load()
        let model = loaded.model
        let vocabulary = model.configuration.vocabularySize
        var generator = SeededGenerator(seed: 0x5eed)
        let prompt = (0..<promptTokens).map { _ in Int32(generator.next() % UInt64(min(vocabulary, 32_000)) + 100) }
        let sequence = model.makeSequence()
        let workspace = Workspace()
        let prefilled = promptTokens - tailDecode
        var sizes = pieces.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
        let listed = sizes.reduce(0, +)
        if listed < prefilled { sizes.append(prefilled - listed) }
        var logits: [Float] = []
        var start = 0
        for size in sizes where start < prefilled {
            let end = min(prefilled, start + size)
            logits = try model.forward(Array(prompt[start..<end]), sequence: sequence, outputs: .last, workspace: workspace)
            start = end
        }
        for token in prompt[prefilled...] {
            logits = try model.decode([token], sequences: [sequence], workspace: workspace)
        }
        var allLogits = logits
        var generated: [Int32] = []
        for _ in 0..<decodeTokens {
            let next = Int32(logits.indices.max(by: { logits[$0] < logits[$1] })!)
            generated.append(next)
            logits = try model.decode([next], sequences: [sequence], workspace: workspace)
            allLogits += logits
        }
        let kv = try sequence.exportKV(0..<sequence.count)
        let kvHash = kv.withUnsafeBytes { XXHash64.hash($0) }
        let logitHash = allLogits.withUnsafeBytes { XXHash64.hash($0) }
        try printJSON([
            "threads": EngineThreads.count,
            "isa": KernelISA.best.description,
            "arithmetic": Linear.arithmeticIdentity,
            "tokens": sequence.count,
            "kv_xxh64": String(kvHash, radix: 16),
            "logits_xxh64": String(logitHash, radix: 16),
            "generated_ids": generated.map(Int.init),
        ])
    }
}

