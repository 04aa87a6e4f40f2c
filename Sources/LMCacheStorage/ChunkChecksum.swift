import CChecksum
import LMCacheCore

/// The one checksum of stored records (``ChunkFormat``), on disk and on the wire (the `lm://`,
/// Redis and peer frame, `KVChunkFrame`), in two parts:
///
/// - **the payload** (the KV bytes, or their encoded stream), ``payload(_:)``: XXH64 over the hashes
///   of its 256 KiB blocks, each block's hash folding an eight-lane multiply-add accumulator over
///   its 64-byte stripes (AVX2, tens of GB/s; `lmcache_stripe_accumulate`) into XXH64. Blockwise,
///   so that a reader can check each block right after reading it, while it is still in cache, and
///   check blocks in parallel;
/// - **the metadata** (the header's fields, name and token ids, which include the payload's
///   checksum), ``metadata(_:)``: XXH64 over them.
///
/// It detects corruption, truncation and foreign bytes; it is not meant to resist an adversary (TLS
/// and access tokens are the defences there).
package enum ChunkChecksum {
    /// Bytes per payload block: small enough that a block just read is still in the L2 cache when
    /// it is hashed.
    static let block = 256 << 10

    /// Number of blocks of a payload of `count` bytes (at least one).
    static func blocks(_ count: Int) -> Int { max(1, (count + block - 1) / block) }

    /// The hash of block `index`, for readers that hash blocks out of order: XXH64 (seed *index*)
    /// over the block's eight stripe-accumulator lanes (``stripeLanes(_:portable:)``), the bytes after
    /// the last whole 64-byte stripe, and the block's length.
    static func blockHash(_ block: UnsafeRawBufferPointer, index: Int) -> UInt64 {
        let whole = block.count / 64 * 64
        var input = [UInt64](repeating: 0, count: 9)
        let lanes = stripeLanes(UnsafeRawBufferPointer(rebasing: block[0..<whole]))
        for i in 0..<8 { input[i] = lanes[i].littleEndian }
        input[8] = UInt64(block.count).littleEndian
        var bytes = input.withUnsafeBytes { [UInt8]($0) }
        bytes.append(contentsOf: block[whole...])
        return bytes.withUnsafeBytes { XXHash64.hash($0, seed: UInt64(index)) }
    }

    /// The eight lanes of the stripe accumulator over `bytes` (a multiple of 64 bytes), from zero.
    package static func stripeLanes(_ bytes: UnsafeRawBufferPointer, portable: Bool = false) -> [UInt64] {
        var lanes = [UInt64](repeating: 0, count: 8)
        lanes.withUnsafeMutableBufferPointer { out in
            if portable {
                lmcache_stripe_accumulate_portable(out.baseAddress!, bytes.baseAddress, bytes.count)
            } else {
                lmcache_stripe_accumulate(out.baseAddress!, bytes.baseAddress, bytes.count)
            }
        }
        return lanes
    }

    /// The payload's checksum from all its block hashes, in order.
    static func combine(_ blockHashes: [UInt64]) -> UInt64 {
        blockHashes.withUnsafeBytes { XXHash64.hash($0) }
    }

    /// The checksum of a whole payload in memory.
    package static func payload(_ payload: UnsafeRawBufferPointer) -> UInt64 {
        var hashes: [UInt64] = []
        hashes.reserveCapacity(blocks(payload.count))
        var offset = 0
        repeat {
            let end = min(offset + block, payload.count)
            hashes.append(blockHash(UnsafeRawBufferPointer(rebasing: payload[offset..<end]), index: hashes.count))
            offset = end
        } while offset < payload.count
        return combine(hashes)
    }

    /// The checksum of a record's metadata: XXH64 over its header's fields, name and token ids
    /// (which include the payload's checksum).
    package static func metadata(_ header: UnsafeRawBufferPointer) -> UInt64 { XXHash64.hash(header) }
}
