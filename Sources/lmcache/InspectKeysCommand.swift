import ArgumentParser
import LMCacheCommandSupport
import LMCacheCore

/// `lmcache inspect keys`: the chunk keys of a token sequence.
struct InspectKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Print the chunk keys of a token sequence, one per line: start, end, key."
    )

    @Option(help: "Token ids, comma-separated.")
    var tokens: String

    @Option(help: "The model name in the keys.")
    var modelName = "model"

    @Option(help: "The model fingerprint in the keys.")
    var fingerprint = "0"

    @Option(help: "Layers, KV heads and head size of the KV layout, e.g. 18x1x256.")
    var layout = "18x1x256"

    @Option(help: "KV dtype: float16, bfloat16 or float32.")
    var dtype = "float16"

    @Option(help: "A tenant salt.")
    var salt: String?

    @OptionGroup var cache: CacheArguments

    func run() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.inspect")
        let config = try cache.load(logger: logger).configuration
        let parts = layout.split(separator: "x").compactMap { Int($0) }
        guard parts.count == 3, parts.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--layout must be LAYERSxKV_HEADSxHEAD_DIM, e.g. 18x1x256")
        }
        guard let kvDType = KVDType(rawValue: dtype) else {
            throw ValidationError("--dtype must be one of \(KVDType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var ids: [Int32] = []
        for text in tokens.split(separator: ",") {
            guard let id = Int32(text.trimmingWhitespaceForCLI()) else {
                throw ValidationError("--tokens: \"\(text)\" is not a token id")
            }
            ids.append(id)
        }
        let keyer = ChunkKeyer(
            model: ModelIdentity(name: modelName, fingerprint: fingerprint),
            layout: KVLayout(layers: parts[0], kvHeads: parts[1], headDim: parts[2], dtype: kvDType),
            chunkSize: config.chunkSize,
            saveUnfullChunk: config.saveUnfullChunk,
            salt: salt
        )
        for chunk in keyer.chunks(for: ids) {
            print("\(chunk.range.lowerBound)\t\(chunk.range.upperBound)\t\(chunk.key)")
        }
    }
}

extension Substring {
    func trimmingWhitespaceForCLI() -> Substring {
        var text = self
        while text.first?.isWhitespace == true { text.removeFirst() }
        while text.last?.isWhitespace == true { text.removeLast() }
        return text
    }
}
