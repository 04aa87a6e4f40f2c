import ArgumentParser
import CKernels
import Foundation
import GGUF
import Kernels
import LMCacheCommandSupport

/// `lmcache bench kernels`: the int8 products of the engine's weight formats, at every kernel level
/// this CPU has, against the portable level measured in the same run.
struct BenchKernelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "Speed of the int8 weight products per format and kernel level, on one thread.",
        discussion: """
            Times lmc_matmul_q8 (the products of a prefill: --rows rows of random weights of each of \
            the formats Gemma 3's GGUF files use, against --tokens tokens of quantized activations) on \
            the calling thread, at each kernel level this CPU supports (generic, avx2, avx512vnni), and \
            prints G multiply-adds per second, the best of --runs passes, and the ratio against the \
            generic level measured in the same run. The 32-value formats (Q5_0, Q8_0) take --columns \
            values a row, the K-quants (Q4_K, Q6_K) --k-columns. Figures depend on the machine: the \
            CPU model and its flags are printed beside them.
            """
    )

    @Option(help: "Rows of weights per product.")
    var rows = 2048

    @Option(help: "Values per row of the 32-value formats (a multiple of 32).")
    var columns = 640

    @Option(help: "Values per row of the K-quants (a multiple of 256).")
    var kColumns = 2048

    @Option(help: "Tokens (activation rows) per product.")
    var tokens = 512

    @Option(help: "Passes per format and level; the best is reported.")
    var runs = 3

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard rows > 0, tokens > 0, runs > 0 else { throw ValidationError("--rows, --tokens and --runs must be positive") }
        guard columns > 0, columns % 32 == 0 else { throw ValidationError("--columns must be a positive multiple of 32") }
        guard kColumns > 0, kColumns % 256 == 0 else {
            throw ValidationError("--k-columns must be a positive multiple of 256")
        }
    }

    func run() throws {
        let levels = KernelISA.allCases.filter { $0.rawValue <= KernelISA.best.rawValue }
        var results: [[String: Any]] = []
        var lines: [String] = []
        for type in [GGMLType.q5_0, .q8_0, .q4_K, .q6_K] {
            let n = type.blockSize == 256 ? kColumns : columns
            let weights = Self.weights(type, rows: rows, columns: n)
            let activations = Self.activations(tokens: tokens, columns: n, kQuant: type.blockSize == 256)
            var output = [Float](repeating: 0, count: tokens * rows)
            var rates: [KernelISA: Double] = [:]
            for level in levels {
                KernelISA.force(level)
                defer { KernelISA.force(nil) }
                var best = Double.infinity
                for _ in 0..<runs {
                    let t0 = monotonicSeconds()
                    weights.withUnsafeBytes { w in
                        lmc_matmul_q8(
                            Int32(type.rawValue), w.baseAddress!, Int64(weights.count / rows), 0, Int64(rows), Int64(n),
                            Int64(tokens), activations.qs, activations.d, activations.ds, &output, Int64(rows))
                    }
                    best = min(best, monotonicSeconds() - t0)
                }
                rates[level] = Double(rows) * Double(n) * Double(tokens) / best / 1e9
            }
            let generic = rates[.generic] ?? 0
            for level in levels {
                let rate = rates[level] ?? 0
                let ratio = generic > 0 ? rate / generic : 0
                results.append([
                    "format": type.description, "level": level.description, "columns": n, "gmac_s": rate,
                    "vs_generic": ratio,
                ])
                let name = "\(type.description) \(level.description)".padding(toLength: 18, withPad: " ", startingAt: 0)
                lines.append(name + String(format: "%6.1f G multiply-adds/s  %6.2f× generic", rate, ratio))
            }
        }
        if json {
            try printJSON([
                "results": results, "rows": rows, "tokens": tokens, "runs": runs, "threads": 1,
                "cpu": CPUDescription.model, "flags": CPUDescription.flags, "isa": KernelISA.best.description,
            ])
        } else {
            print("\(CPUDescription.model) (\(CPUDescription.flags.joined(separator: " "))), one thread, \(rows) rows by \(tokens) tokens")
            lines.forEach { print($0) }
        }
    }

    /// Random blocks of `type` with small positive half-precision scales, so that every product is finite.
    static func weights(_ type: GGMLType, rows: Int, columns: Int) -> [UInt8] {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 33
        }
        let blocks = rows * columns / type.blockSize
        var bytes = (0..<(blocks * type.typeSize)).map { _ in UInt8(truncatingIfNeeded: next()) }
        let scaleOffsets: [Int] =
            switch type {
            case .q5_0, .q8_0: [0]
            case .q4_K: [0, 2]
            case .q6_K: [208]
            default: []
            }
        for b in 0..<blocks {
            for offset in scaleOffsets {
                let bits = Float16(Float(next() % 1000) / 50_000 + 0.001).bitPattern
                bytes[b * type.typeSize + offset] = UInt8(bits & 0xFF)
                bytes[b * type.typeSize + offset + 1] = UInt8(bits >> 8)
            }
        }
        return bytes
    }

    /// `tokens` rows of random activations, quantized as the engine quantizes them for these formats
    /// (`QuantizedActivation`; K-quants per 256 values). Rows are whole blocks, so one call covers all.
    static func activations(tokens: Int, columns: Int, kQuant: Bool) -> QuantizedActivation {
        var state: UInt64 = 7
        let x = (0..<(tokens * columns)).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int(state >> 33) % 2001 - 1000) / 1000
        }
        let activation = QuantizedActivation(capacity: tokens * columns)
        activation.quantize(x, count: x.count, superBlocks: kQuant)
        return activation
    }
}
