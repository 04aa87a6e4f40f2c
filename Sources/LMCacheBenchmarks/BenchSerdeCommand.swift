import ArgumentParser
import Foundation
import Inference
import Kernels
import LMCacheCommandSupport
import LMCacheCore
import LMCacheStorage
import Tokenizers

/// `lmcache bench serde`: what each KV serde costs and changes, on the real model.
struct BenchSerdeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serde",
        abstract: "Size, speed and quality of the KV serdes (remote_serde, local_disk_serde) on real KV.",
        discussion: """
            Held-out text (the license texts of /usr/share/common-licenses, or --file) is cut into \
            --documents passages of --prefix-tokens + --eval-tokens tokens. For each passage the model \
            computes the prefix's KV and then, teacher-forced, the logits at every evaluation position: \
            the exact run. The prefix's KV is exported as float16 in 256-token chunks (as the tiers \
            store it), passed through each serde (encode, decode), loaded into a fresh sequence, and \
            the evaluation tokens are run again. Reported per serde: bytes against float16 (ratio), \
            encode and decode speed (GB/s of float16 KV, one thread; each chunk decoded once right \
            after its encoding, as a tier decodes a hit, then again with its stream in cache: "warm \
            dec"), and against the exact run: \
            agreement of the top-1 token at every evaluation position and the mean KL divergence \
            KL(exact ‖ serde) of the next-token distributions. Lossless serdes must give agreement \
            1 and KL 0 exactly; the command fails if they do not. The baseline row "±1 ulp" moves \
            every value by one float16 step (the smallest change any lossy serde can make) with no \
            codec: the floor of what the engine's arithmetic lets a lossy serde reach.
            """
    )

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Text file to take the passages from (default: the license texts).")
    var file: String?

    @Option(help: "Passages to evaluate.")
    var documents = 4

    @Option(help: "Tokens of each passage whose KV goes through the serde (a multiple of 256).")
    var prefixTokens = 1024

    @Option(help: "Tokens after the prefix at which the logits are compared.")
    var evalTokens = 128

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard documents > 0, evalTokens > 0 else { throw ValidationError("--documents and --eval-tokens must be positive") }
        guard prefixTokens > 0, prefixTokens % 256 == 0 else {
            throw ValidationError("--prefix-tokens must be a positive multiple of 256")
        }
    }

    /// One serde setting measured.
    struct Variant {
        var name: String
        var serde: KVSerde
        var level: Int32?
        /// The ±1-ulp baseline: no codec, every value moved by one float16 step.
        var oneULP = false
        var streamBytes = 0
        var rawBytes = 0
        var encodeSeconds = 0.0
        var decodeSeconds = 0.0
        /// The same chunks decoded a second time, their stream and tables now in cache.
        var warmDecodeSeconds = 0.0
        var agreeing = 0
        var positions = 0
        var klSum = 0.0
        var klMax = 0.0
    }

    func run() async throws {
        let (gguf, model, _) = try modelArguments.load()
        let tokenizer = try makeTokenizer(from: gguf)
        let text: String
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            text = String(decoding: data, as: UTF8.self)
        } else {
            text = SampleText.text(characters: 8 * documents * (prefixTokens + evalTokens))
        }
        let all = tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        let passage = prefixTokens + evalTokens - 1
        guard all.count >= documents * passage else {
            throw ValidationError("the text has \(all.count) tokens; \(documents) passages need \(documents * passage)")
        }
        let bos = tokenizer.encode("", addSpecial: true, parseSpecial: false)
        let layout = KVLayout(
            layers: model.kvLayout.layers, kvHeads: model.kvLayout.kvHeads, headDim: model.kvLayout.headDim,
            dtype: .float16
        )
        var variants = [Variant(name: "naive", serde: .naive), Variant(name: "±1 ulp (the floor)", serde: .naive, oneULP: true),
            Variant(name: "lossless", serde: .lossless), Variant(name: "q8", serde: .q8)]
        for level in KVCodec.cachegenLevels {
            let name = level == KVCodec.cachegenLevel ? "cachegen (level \(level), the default)" : "cachegen level \(level)"
            variants.append(Variant(name: name, serde: .cachegen, level: level))
        }
        let vocabulary = model.configuration.vocabularySize
        let workspace = Workspace()
        let spacing = all.count / documents
        for document in 0..<documents {
            let start = document * spacing
            let tokens = bos + Array(all[start..<(start + passage)])
            let prefix = Array(tokens[..<prefixTokens])
            let evaluated = Array(tokens[prefixTokens...])
            let exactSequence = model.makeSequence()
            _ = try model.forward(prefix, sequence: exactSequence, outputs: .last, workspace: workspace)
            let chunks = stride(from: 0, to: prefixTokens, by: 256).map { $0..<($0 + 256) }
            var exported: [[UInt8]] = []
            for range in chunks {
                var bytes = [UInt8](repeating: 0, count: layout.byteCount(tokens: range.count))
                try bytes.withUnsafeMutableBytes { try exactSequence.exportKV(range, as: .float16, into: $0) }
                exported.append(bytes)
            }
            let exact = try model.forward(evaluated, sequence: exactSequence, outputs: .all, workspace: workspace)
            let reference = Self.distributions(exact, positions: evaluated.count, vocabulary: vocabulary)

            for index in variants.indices {
                let sequence = model.makeSequence()
                for (range, bytes) in zip(chunks, exported) {
                    var decoded = bytes
                    if variants[index].serde != .naive {
                        let codec = KVCodec.id(variants[index].serde)
                        let level = variants[index].level
                        var stream: [UInt8]?
                        let encodeStart = monotonicSeconds()
                        stream = bytes.withUnsafeBytes {
                            KVCodec.encode($0, codec: codec, level: level, layout: layout, tokens: range.count)
                        }
                        variants[index].encodeSeconds += monotonicSeconds() - encodeStart
                        guard let stream else { throw CommandFailure("\(variants[index].name): the encoder refused a chunk") }
                        // The decode is timed into memory already written, as a tier's buffers are: the
                        // copy `decoded` makes of `bytes` on its first write happens before the clock starts.
                        decoded.withUnsafeMutableBytes { $0[0] = 0 }
                        func decode() -> (ok: Bool, seconds: Double) {
                            let start = monotonicSeconds()
                            let ok = stream.withUnsafeBytes { source in
                                decoded.withUnsafeMutableBytes {
                                    KVCodec.decode(source, codec: codec, layout: layout, tokens: range.count, into: $0)
                                }
                            }
                            return (ok, monotonicSeconds() - start)
                        }
                        let first = decode()
                        variants[index].decodeSeconds += first.seconds
                        guard first.ok else { throw CommandFailure("\(variants[index].name): a stream did not decode") }
                        variants[index].warmDecodeSeconds += decode().seconds
                        variants[index].streamBytes += stream.count
                    } else {
                        variants[index].streamBytes += bytes.count
                        if variants[index].oneULP { Self.moveOneULP(&decoded) }
                    }
                    variants[index].rawBytes += bytes.count
                    try decoded.withUnsafeBytes {
                        try sequence.importKV($0, of: .float16, tokens: tokens[range], at: range.lowerBound)
                    }
                }
                let logits = try model.forward(evaluated, sequence: sequence, outputs: .all, workspace: workspace)
                if variants[index].serde.isLossless && !variants[index].oneULP && logits != exact {
                    throw CommandFailure("\(variants[index].name) is lossless, but its logits differ from the exact run")
                }
                let compared = Self.distributions(logits, positions: evaluated.count, vocabulary: vocabulary)
                for position in 0..<evaluated.count {
                    if compared[position].top == reference[position].top { variants[index].agreeing += 1 }
                    let kl = Self.kl(reference[position].logProbabilities, compared[position].logProbabilities)
                    variants[index].klSum += kl
                    variants[index].klMax = max(variants[index].klMax, kl)
                    variants[index].positions += 1
                }
            }
        }
        report(variants)
    }

    private func report(_ variants: [Variant]) {
        let rows = variants.map { variant -> [String: Any] in
            let gigabytes = Double(variant.rawBytes) / 1e9
            return [
                "serde": variant.name,
                "ratio": Double(variant.rawBytes) / Double(variant.streamBytes),
                "bits_per_value": 8 * Double(variant.streamBytes) / Double(variant.rawBytes / 2),
                "encode_gbps": variant.encodeSeconds > 0 ? gigabytes / variant.encodeSeconds : 0.0,
                "decode_gbps": variant.decodeSeconds > 0 ? gigabytes / variant.decodeSeconds : 0.0,
                "warm_decode_gbps": variant.warmDecodeSeconds > 0 ? gigabytes / variant.warmDecodeSeconds : 0.0,
                "top1_agreement": Double(variant.agreeing) / Double(variant.positions),
                "baseline": variant.oneULP,
                "mean_kl": variant.klSum / Double(variant.positions),
                "max_kl": variant.klMax,
            ]
        }
        let cpu = "\(CPUDescription.model) (\(CPUDescription.flags.joined(separator: " ")))"
        if json {
            try? printJSON([
                "cpu": cpu, "documents": documents, "prefix_tokens": prefixTokens, "eval_tokens": evalTokens,
                "positions": variants.first?.positions ?? 0, "serdes": rows,
            ])
            return
        }
        print("\(cpu)\n\(documents) passages × (\(prefixTokens) prefix + \(evalTokens) evaluated tokens)")
        print("serde".padded(to: 36) + "ratio   bits   enc GB/s  dec GB/s  warm dec  top-1    mean KL    max KL")
        for (variant, row) in zip(variants, rows) {
            print(
                variant.name.padded(to: 36)
                    + String(
                        format: "%-7.2f %-6.2f %-9.2f %-9.2f %-9.2f %-8.4f %-10.2e %.2e",
                        row["ratio"] as! Double, row["bits_per_value"] as! Double, row["encode_gbps"] as! Double,
                        row["decode_gbps"] as! Double, row["warm_decode_gbps"] as! Double,
                        row["top1_agreement"] as! Double, row["mean_kl"] as! Double,
                        row["max_kl"] as! Double
                    )
            )
        }
    }

    /// The top token and the log-probabilities of each position's logits.
    static func distributions(_ logits: [Float], positions: Int, vocabulary: Int) -> [(top: Int32, logProbabilities: [Double])] {
        (0..<positions).map { position in
            let row = logits[(position * vocabulary)..<((position + 1) * vocabulary)]
            let maximum = Double(row.max()!)
            var sum = 0.0
            for value in row { sum += exp(Double(value) - maximum) }
            let logSum = log(sum) + maximum
            return (Sampler.argmax(row), row.map { Double($0) - logSum })
        }
    }

    /// Moves every finite float16 value one step away from zero or toward it, alternately.
    static func moveOneULP(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { raw in
            let values = raw.bindMemory(to: UInt16.self)
            for i in values.indices {
                let magnitude = values[i] & 0x7FFF
                guard magnitude < 0x7BFF else { continue }  // keep the largest finite value, inf and NaN
                if i % 2 == 0 || magnitude == 0 {
                    values[i] &+= 1
                } else {
                    values[i] &-= 1
                }
            }
        }
    }

    /// KL(p ‖ q) from log-probabilities.
    static func kl(_ p: [Double], _ q: [Double]) -> Double {
        var total = 0.0
        for i in p.indices where p[i] > -50 { total += exp(p[i]) * (p[i] - q[i]) }
        return max(0, total)
    }
}
