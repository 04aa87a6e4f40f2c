import GGUF
import Testing

@testable import Kernels

/// Random blocks of `type` with finite scales, `rows × columns` values.
func randomWeights(_ type: GGMLType, rows: Int, columns: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix(seed: seed)
    let blocks = rows * columns / type.blockSize
    var bytes = [UInt8](repeating: 0, count: blocks * type.typeSize)
    for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
    func putHalf(_ value: Float, at offset: Int) {
        let bits = Float16(value).bitPattern
        bytes[offset] = UInt8(bits & 0xFF)
        bytes[offset + 1] = UInt8(bits >> 8)
    }
    let scaleOffsets: [Int] =
        switch type {
        case .q8_0, .q4_0, .q5_0: [0]
        case .q4_K, .q5_K: [0, 2]
        case .q6_K: [208]
        default: []
        }
    for b in 0..<blocks {
        for offset in scaleOffsets {
            putHalf(Float(rng.next() % 1000) / 50_000 + 0.001, at: b * type.typeSize + offset)
        }
    }
    if type == .f32 {
        for i in 0..<(rows * columns) {
            let v = Float(Int(rng.next() % 2001) - 1000) / 1000
            withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes.replaceSubrange((4 * i)..<(4 * i + 4), with: $0) }
        }
    } else if type == .f16 {
        for i in 0..<(rows * columns) { putHalf(Float(Int(rng.next() % 2001) - 1000) / 1000, at: 2 * i) }
    }
    return bytes
}

/// A small deterministic generator for test data.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func float() -> Float { Float(Int(next() % 20001) - 10000) / 10000 }
}

@Suite("Linear")
struct LinearTests {
    static let types: [GGMLType] = [.q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K, .f32, .f16]

    @Test("decode matvec equals a float reference on the quantized activation", arguments: types, KernelISA.allCases)
    func matvec(type: GGMLType, isa: KernelISA) throws {
        defer { KernelISA.force(nil) }
        KernelISA.force(isa)
        let rows = 37, columns = 512
        let bytes = randomWeights(type, rows: rows, columns: columns, seed: UInt64(type.rawValue))
        let w = try Dequantization.dequantize(type, bytes: bytes)
        var rng = SplitMix(seed: 7)
        var x = (0..<columns).map { _ in rng.float() }
        let scratch = LinearScratch()
        var y = [Float](repeating: .nan, count: rows)
        try bytes.withUnsafeBytes { raw in
            let matrix = try WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            // On this thread only (the ISA is forced per thread).
            let act = scratch.activation(for: matrix)
            if matrix.usesQuantizedDot {
                act.quantize(x, count: columns, superBlocks: matrix.usesSuperBlockActivation)
            }
            y.withUnsafeMutableBufferPointer { yp in
                Linear.rowDots(matrix, rows: 0..<rows, x: x, act: act, y: yp.baseAddress!)
            }
            if matrix.usesQuantizedDot {
                // The kernels see x through its int8 quantization: compare with that exact input.
                for i in 0..<columns { x[i] = act.d[i / 32] * Float(act.qs[i]) }
            }
        }
        for r in 0..<rows {
            var ref = 0.0
            for c in 0..<columns { ref += Double(w[r * columns + c]) * Double(x[c]) }
            #expect(abs(Double(y[r]) - ref) <= 1e-4 * max(1, abs(ref)), "row \(r): \(y[r]) vs \(ref)")
        }
    }

    @Test("the int8 activation error is small against exact Float products")
    func quantizationError() throws {
        let rows = 64, columns = 640
        let bytes = randomWeights(.q8_0, rows: rows, columns: columns, seed: 3)
        let w = try Dequantization.dequantize(.q8_0, bytes: bytes)
        var rng = SplitMix(seed: 9)
        let x = (0..<columns).map { _ in rng.float() }
        var y = [Float](repeating: 0, count: rows)
        try bytes.withUnsafeBytes { raw in
            let matrix = try WeightMatrix(type: .q8_0, rows: rows, columns: columns, base: raw.baseAddress!)
            y.withUnsafeMutableBufferPointer { Linear.matvec([(matrix, $0.baseAddress!)], x: x, scratch: LinearScratch()) }
        }
        var err = 0.0, norm = 0.0
        for r in 0..<rows {
            var ref = 0.0
            for c in 0..<columns { ref += Double(w[r * columns + c]) * Double(x[c]) }
            err += (Double(y[r]) - ref) * (Double(y[r]) - ref)
            norm += ref * ref
        }
        #expect((err / norm).squareRoot() < 0.01)
    }

    @Test(
        "batched matmul equals per-row Float products",
        arguments: [GGMLType.q4_K, .q6_K, .q5_0, .q8_0, .f32], [Linear.Strategy.quantized, .sgemm])
    func matmul(type: GGMLType, strategy: Linear.Strategy) throws {
        let rows = 300, columns = 256, tokens = 19
        let bytes = randomWeights(type, rows: rows, columns: columns, seed: 11)
        let w = try Dequantization.dequantize(type, bytes: bytes)
        var rng = SplitMix(seed: 5)
        let x = (0..<(tokens * columns)).map { _ in rng.float() }
        var y = [Float](repeating: .nan, count: tokens * rows)
        try bytes.withUnsafeBytes { raw in
            let matrix = try WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            y.withUnsafeMutableBufferPointer { yp in
                Linear.matmul(matrix, x: x, count: tokens, y: yp.baseAddress!, strategy: strategy, scratch: LinearScratch())
            }
        }
        for t in 0..<tokens {
            for r in 0..<rows {
                var ref = 0.0, magnitude = 0.0
                for c in 0..<columns {
                    let p = Double(w[r * columns + c]) * Double(x[t * columns + c])
                    ref += p
                    magnitude += abs(p)
                }
                // The quantized strategy sees int8 activations: allow their rounding error (relative to
                // the sum of |products|, since offsets of K-quant blocks can cancel in the sum).
                let tolerance = strategy == .quantized && type != .f32 ? 0.01 * magnitude : 1e-4 * max(1, abs(ref))
                #expect(abs(Double(y[t * rows + r]) - ref) <= tolerance)
            }
        }
    }
}

@Suite("Linear batching")
struct LinearBatchingTests {
    @Test(
        "a token's quantized product is bit-identical alone, in a batch, and through matvec",
        arguments: [GGMLType.q4_K, .q8_0, .q5_0, .q6_K])
    func batchIndependence(type: GGMLType) throws {
        let rows = 97, columns = 512, tokens = 13
        let bytes = randomWeights(type, rows: rows, columns: columns, seed: 21)
        var rng = SplitMix(seed: 22)
        let x = (0..<(tokens * columns)).map { _ in rng.float() }
        var batched = [Float](repeating: 0, count: tokens * rows)
        var single = [Float](repeating: 0, count: rows)
        try bytes.withUnsafeBytes { raw in
            let matrix = try WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            let scratch = LinearScratch()
            batched.withUnsafeMutableBufferPointer {
                Linear.matmul(matrix, x: x, count: tokens, y: $0.baseAddress!, strategy: .quantized, scratch: scratch)
            }
            x.withUnsafeBufferPointer { xp in
                single.withUnsafeMutableBufferPointer {
                    Linear.matvec([(matrix, $0.baseAddress!)], x: xp.baseAddress! + 5 * columns, scratch: scratch)
                }
            }
        }
        #expect(Array(batched[(5 * rows)..<(6 * rows)]) == single)
    }
}

@Suite("Small token blocks")
struct SmallBlockTests {
    // One tile of 45 rows is one job, which runs on the calling thread: the forced ISA applies.
    @Test(
        "a small block's products match sgemm's closely, and each token's are the same in any small block",
        arguments: KernelISA.allCases)
    func smallBlocks(isa: KernelISA) throws {
        defer { KernelISA.force(nil) }
        KernelISA.force(isa)
        let rows = 45, columns = 640
        let small = min(Linear.smallBlockTokens, 7)
        let large = Linear.smallBlockTokens + 6
        try #require(small >= 2, "the small-block kernel is switched off")
        let bytes = randomWeights(.f32, rows: rows, columns: columns, seed: 31)
        var rng = SplitMix(seed: 32)
        let x = (0..<(large * columns)).map { _ in rng.float() }
        var inSmall = [Float](repeating: 0, count: large * rows)
        var alone = [Float](repeating: 0, count: large * rows)
        var bySgemm = [Float](repeating: 0, count: large * rows)
        try bytes.withUnsafeBytes { raw in
            let matrix = try WeightMatrix(type: .f32, rows: rows, columns: columns, base: raw.baseAddress!)
            let scratch = LinearScratch()
            // Tokens 0..<small in one small block, each token also on its own, and all of them in one
            // block too large for the small kernel (sgemm).
            inSmall.withUnsafeMutableBufferPointer {
                Linear.sgemmBlocks(matrix, x: x, blocks: [0..<small], y: $0.baseAddress!, scratch: scratch)
            }
            alone.withUnsafeMutableBufferPointer {
                Linear.sgemmBlocks(matrix, x: x, blocks: (0..<small).map { $0..<($0 + 1) }, y: $0.baseAddress!, scratch: scratch)
            }
            bySgemm.withUnsafeMutableBufferPointer {
                Linear.sgemmBlocks(matrix, x: x, blocks: [0..<large], y: $0.baseAddress!, scratch: scratch)
            }
            let w = raw.bindMemory(to: Float.self)
            for t in 0..<small {
                for r in 0..<rows {
                    var exact = 0.0
                    for p in 0..<columns { exact += Double(x[t * columns + p]) * Double(w[r * columns + p]) }
                    #expect(abs(Double(inSmall[t * rows + r]) - exact) <= 1e-4 * max(1, abs(exact)))
                }
            }
        }
        let n = small * rows
        #expect(Array(inSmall[..<n]) == Array(alone[..<n]), "a token's products depend on its block")
        let worst = zip(inSmall[..<n], bySgemm[..<n]).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 1e-3, "small-block kernel against sgemm: \(worst)")
        #expect(Array(inSmall[..<n]) != [Float](repeating: 0, count: n))
    }
}
