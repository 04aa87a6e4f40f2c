extension GGUFFile {
    /// A 128-bit identity of the model file, as 32 lowercase hex digits.
    ///
    /// The hash covers the file size, the whole header (magic, version, metadata and tensor
    /// descriptions, up to ``dataOffset``) and, for each tensor in file order, up to 64 bytes at the
    /// start and 64 at the end of its data. Two files with different metadata, tensor layout or
    /// quantization differ; files that differ only deep inside tensor data may not. It is
    /// deterministic across processes, machines and runs, so the cache can use it as part of its
    /// keys. The function is MurmurHash3 (x64, 128-bit, seed 0) over that byte sequence.
    ///
    /// - Complexity: O(header size + number of tensors); it is computed on each call (a few
    ///   milliseconds for a 262k-token vocabulary), so keep the result.
    public var fingerprint: String {
        var hasher = Murmur3x64_128()
        var size = UInt64(fileSize).littleEndian
        unsafe withUnsafeBytes(of: &size) { unsafe hasher.combine($0) }
        unsafe withFileBytes { bytes in
            // Safe: dataOffset <= fileSize whenever the file has tensors; clamp for tensor-less files.
            let headerEnd = min(dataOffset, bytes.count)
            unsafe hasher.combine(UnsafeRawBufferPointer(rebasing: bytes[0..<headerEnd]))
            for tensor in tensors {
                let sample = min(64, tensor.byteCount)
                // Safe: the reader checked offset + byteCount <= fileSize for every tensor.
                let end = tensor.offset + tensor.byteCount
                unsafe hasher.combine(UnsafeRawBufferPointer(rebasing: bytes[tensor.offset..<(tensor.offset + sample)]))
                unsafe hasher.combine(UnsafeRawBufferPointer(rebasing: bytes[(end - sample)..<end]))
            }
        }
        let (h1, h2) = hasher.finalize()
        return Self.hex(h1) + Self.hex(h2)
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// Streaming MurmurHash3 x64 128-bit (Austin Appleby's public-domain design), seed 0.
package struct Murmur3x64_128 {
    private var h1: UInt64 = 0
    private var h2: UInt64 = 0
    private var length: UInt64 = 0
    private var tail: [UInt8] = []

    private static let c1: UInt64 = 0x87c3_7b91_1142_53d5
    private static let c2: UInt64 = 0x4cf5_ad43_2745_937f

    package init() { tail.reserveCapacity(16) }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always)
    private static func fmix(_ k: UInt64) -> UInt64 {
        var k = k
        k ^= k >> 33
        k &*= 0xff51_afd7_ed55_8ccd
        k ^= k >> 33
        k &*= 0xc4ce_b9fe_1a85_ec53
        k ^= k >> 33
        return k
    }

    @inline(__always)
    private mutating func block(_ k1In: UInt64, _ k2In: UInt64) {
        // Wrapping arithmetic (&*, &+) is the hash's definition, not an overflow risk.
        var k1 = k1In
        var k2 = k2In
        k1 &*= Self.c1
        k1 = Self.rotl(k1, 31)
        k1 &*= Self.c2
        h1 ^= k1
        h1 = Self.rotl(h1, 27)
        h1 &+= h2
        h1 = h1 &* 5 &+ 0x52dc_e729
        k2 &*= Self.c2
        k2 = Self.rotl(k2, 33)
        k2 &*= Self.c1
        h2 ^= k2
        h2 = Self.rotl(h2, 31)
        h2 &+= h1
        h2 = h2 &* 5 &+ 0x3849_5ab5
    }

    /// Appends bytes to the hashed sequence.
    package mutating func combine(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        var index = 0
        // Complete a pending partial block first.
        while !tail.isEmpty, tail.count < 16, index < bytes.count {
            unsafe tail.append(bytes[index])
            index += 1
        }
        if tail.count == 16 {
            let (k1, k2) = unsafe tail.withUnsafeBytes {
                unsafe (
                    $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self),
                    $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                )
            }
            block(UInt64(littleEndian: k1), UInt64(littleEndian: k2))
            tail.removeAll(keepingCapacity: true)
        }
        // Whole blocks straight from the input.
        while bytes.count - index >= 16 {
            // Safe: 16 bytes are present at `index` (loop condition); loads are unaligned-tolerant.
            let k1 = unsafe UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            let k2 = unsafe UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index + 8, as: UInt64.self))
            block(k1, k2)
            index += 16
        }
        while index < bytes.count {
            unsafe tail.append(bytes[index])
            index += 1
        }
    }

    /// Finishes the hash and returns its two 64-bit halves.
    package func finalize() -> (UInt64, UInt64) {
        var h1 = self.h1
        var h2 = self.h2
        var k1: UInt64 = 0
        var k2: UInt64 = 0
        for (i, byte) in tail.enumerated() {
            if i < 8 {
                k1 |= UInt64(byte) << (8 * UInt64(i))
            } else {
                k2 |= UInt64(byte) << (8 * UInt64(i - 8))
            }
        }
        if tail.count > 8 {
            k2 &*= Self.c2
            k2 = Self.rotl(k2, 33)
            k2 &*= Self.c1
            h2 ^= k2
        }
        if !tail.isEmpty {
            k1 &*= Self.c1
            k1 = Self.rotl(k1, 31)
            k1 &*= Self.c2
            h1 ^= k1
        }
        h1 ^= length
        h2 ^= length
        h1 &+= h2
        h2 &+= h1
        h1 = Self.fmix(h1)
        h2 = Self.fmix(h2)
        h1 &+= h2
        h2 &+= h1
        return (h1, h2)
    }
}
