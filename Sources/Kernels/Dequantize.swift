// Dequantization of GGUF tensor formats to Float.
//
// Block layouts (ggml's, as written by the `gguf` Python package and llama.cpp):
// - Q8_0 (34 bytes / 32): f16 d, 32 × int8 q; x = d·q.
// - Q4_0 (18 bytes / 32): f16 d, 16 bytes; element i < 16 is the low nibble of byte i, element i + 16
//   the high nibble; x = d·(q − 8).
// - Q5_0 (22 bytes / 32): f16 d, u32 qh, 16 bytes as Q4_0; bit i of qh is bit 4 of element i; x = d·(q − 16).
// - Q4_K (144 bytes / 256): f16 d, f16 dmin, 12 bytes of packed 6-bit scales and minimums for eight
//   32-element sub-blocks, 128 bytes; 64-element chunk j takes 32 bytes, low nibbles give sub-block 2j,
//   high nibbles sub-block 2j + 1; x = d·sc·q − dmin·m.
// - Q5_K (176 bytes / 256): as Q4_K plus 32 bytes qh before the nibbles; bit 2j (2j + 1) of qh[l]
//   is bit 4 of element l of sub-block 2j (2j + 1).
// - Q6_K (210 bytes / 256): 128 bytes low nibbles, 64 bytes of 2-bit highs, 16 int8 scales (one per 16
//   elements), f16 d; x = d·sc·(q − 32). Each 128-element half uses 64 + 32 bytes, see `dequantizeQ6K`.
// - F32, F16, BF16: plain little-endian values.

public import GGUF
internal import CKernels

/// Dequantization of GGUF tensor data to `Float`.
public enum Dequantization {
    /// The tensor types that can be dequantized.
    public static let supportedTypes: Set<GGMLType> = [.f32, .f16, .bf16, .q8_0, .q4_0, .q5_0, .q4_K, .q5_K, .q6_K]

    /// Whether `type` can be dequantized.
    public static func supports(_ type: GGMLType) -> Bool { supportedTypes.contains(type) }

    /// Dequantizes raw tensor bytes into an array of floats.
    ///
    /// - Parameters:
    ///   - type: the element type of `bytes`.
    ///   - bytes: whole blocks of `type`.
    /// - Returns: `bytes.count / type.typeSize × type.blockSize` values.
    /// - Throws: ``KernelError`` when the type is unsupported or `bytes` is not a whole number of blocks.
    /// - Complexity: O(n) in the number of elements.
    ///
    /// ```swift
    /// let values = try Dequantization.dequantize(.q8_0, bytes: blockBytes)
    /// ```
    public static func dequantize(_ type: GGMLType, bytes: [UInt8]) throws(KernelError) -> [Float] {
        guard supports(type) else { throw KernelError.unsupportedType(type) }
        guard bytes.count % type.typeSize == 0 else {
            throw KernelError.invalidArgument("\(bytes.count) bytes is not a whole number of \(type) blocks")
        }
        let count = bytes.count / type.typeSize * type.blockSize
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            bytes.withUnsafeBytes { raw in
                // Safe: `raw` holds count / blockSize whole blocks and `out` has room for `count` floats.
                dequantize(type, from: raw.baseAddress!, count: count, into: out.baseAddress!)
            }
            initialized = count
        }
    }

    /// Dequantizes `count` elements (a whole number of blocks) of `type` at `source` into `destination`.
    ///
    /// The caller guarantees that `source` holds `count / blockSize` blocks and `destination` room for
    /// `count` floats, and that `type` is supported.
    package static func dequantize(
        _ type: GGMLType,
        from source: UnsafeRawPointer,
        count: Int,
        into destination: UnsafeMutablePointer<Float>
    ) {
        switch type {
        case .f32:
            destination.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .f16:
            for i in 0..<count {
                destination[i] = lmc_f16_to_f32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .bf16:
            for i in 0..<count {
                let bits = UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
                destination[i] = Float(bitPattern: bits)
            }
        case .q8_0: dequantizeQ8_0(source, count / 32, destination)
        case .q4_0: dequantizeQ4_0(source, count / 32, destination)
        case .q5_0: dequantizeQ5_0(source, count / 32, destination)
        case .q4_K: dequantizeQ4K(source, count / 256, destination)
        case .q5_K: dequantizeQ5K(source, count / 256, destination)
        case .q6_K: dequantizeQ6K(source, count / 256, destination)
        default:
            preconditionFailure("dequantize called with unsupported type \(type)")
        }
    }

    @inline(__always)
    static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        lmc_f16_to_f32(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    static func dequantizeQ8_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let blk = src + b * 34
            let d = half(blk, 0)
            let q = (blk + 2).assumingMemoryBound(to: Int8.self)
            let out = dst + b * 32
            for i in 0..<32 { out[i] = d * Float(q[i]) }
        }
    }

    static func dequantizeQ4_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let blk = src + b * 18
            let d = half(blk, 0)
            let q = (blk + 2).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 32
            for i in 0..<16 {
                out[i] = d * Float(Int(q[i] & 0x0F) - 8)
                out[i + 16] = d * Float(Int(q[i] >> 4) - 8)
            }
        }
    }

    static func dequantizeQ5_0(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let blk = src + b * 22
            let d = half(blk, 0)
            let qh = blk.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            let q = (blk + 6).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 32
            for i in 0..<16 {
                let lo = Int(q[i] & 0x0F) | Int((qh >> UInt32(i)) & 1) << 4
                let hi = Int(q[i] >> 4) | Int((qh >> UInt32(i + 16)) & 1) << 4
                out[i] = d * Float(lo - 16)
                out[i + 16] = d * Float(hi - 16)
            }
        }
    }

    /// Scale and minimum of sub-block `j` (0..<8) from the 12 packed bytes at `s`.
    @inline(__always)
    static func scaleMinK4(_ j: Int, _ s: UnsafePointer<UInt8>) -> (Float, Float) {
        if j < 4 {
            return (Float(s[j] & 63), Float(s[j + 4] & 63))
        }
        let sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4)
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4)
        return (Float(sc), Float(m))
    }

    static func dequantizeQ4K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let blk = src + b * 144
            let d = half(blk, 0)
            let dmin = half(blk, 2)
            let scales = (blk + 4).assumingMemoryBound(to: UInt8.self)
            let q = (blk + 16).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 256
            for j in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * j, scales)
                let (s2, m2) = scaleMinK4(2 * j + 1, scales)
                let d1 = d * s1, c1 = dmin * m1, d2 = d * s2, c2 = dmin * m2
                for l in 0..<32 {
                    let byte = q[32 * j + l]
                    out[64 * j + l] = d1 * Float(byte & 0x0F) - c1
                    out[64 * j + 32 + l] = d2 * Float(byte >> 4) - c2
                }
            }
        }
    }

    static func dequantizeQ5K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let blk = src + b * 176
            let d = half(blk, 0)
            let dmin = half(blk, 2)
            let scales = (blk + 4).assumingMemoryBound(to: UInt8.self)
            let qh = (blk + 16).assumingMemoryBound(to: UInt8.self)
            let q = (blk + 48).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 256
            for j in 0..<4 {
                let (s1, m1) = scaleMinK4(2 * j, scales)
                let (s2, m2) = scaleMinK4(2 * j + 1, scales)
                let d1 = d * s1, c1 = dmin * m1, d2 = d * s2, c2 = dmin * m2
                for l in 0..<32 {
                    let byte = q[32 * j + l]
                    let h1 = (qh[l] >> UInt8(2 * j)) & 1
                    let h2 = (qh[l] >> UInt8(2 * j + 1)) & 1
                    out[64 * j + l] = d1 * Float((byte & 0x0F) | h1 << 4) - c1
                    out[64 * j + 32 + l] = d2 * Float((byte >> 4) | h2 << 4) - c2
                }
            }
        }
    }

    static func dequantizeQ6K(_ src: UnsafeRawPointer, _ blocks: Int, _ dst: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let blk = src + b * 210
            let d = half(blk, 208)
            let scales = (blk + 192).assumingMemoryBound(to: Int8.self)
            for h in 0..<2 {
                let ql = (blk + 64 * h).assumingMemoryBound(to: UInt8.self)
                let qh = (blk + 128 + 32 * h).assumingMemoryBound(to: UInt8.self)
                let sc = scales + 8 * h
                let out = dst + b * 256 + 128 * h
                for l in 0..<32 {
                    let s = l / 16
                    let hb = qh[l]
                    let q1 = Int((ql[l] & 0x0F) | ((hb & 3) << 4)) - 32
                    let q2 = Int((ql[l + 32] & 0x0F) | (((hb >> 2) & 3) << 4)) - 32
                    let q3 = Int((ql[l] >> 4) | (((hb >> 4) & 3) << 4)) - 32
                    let q4 = Int((ql[l + 32] >> 4) | (((hb >> 6) & 3) << 4)) - 32
                    out[l] = d * Float(sc[s]) * Float(q1)
                    out[l + 32] = d * Float(sc[s + 2]) * Float(q2)
                    out[l + 64] = d * Float(sc[s + 4]) * Float(q3)
                    out[l + 96] = d * Float(sc[s + 6]) * Float(q4)
                }
            }
        }
    }
}
