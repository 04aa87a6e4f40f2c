import GGUF
import Testing

@Suite("MurmurHash3 x64 128 used by the fingerprint")
struct FingerprintHashTests {
    private func hash(_ bytes: [UInt8], chunk: Int) -> String {
        var hasher = Murmur3x64_128()
        var index = 0
        while index < bytes.count {
            let end = min(index + chunk, bytes.count)
            bytes[index..<end].withUnsafeBytes { hasher.combine($0) }
            index = end
        }
        let (h1, h2) = hasher.finalize()
        func hex(_ v: UInt64) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }
        return hex(h1) + hex(h2)
    }

    // Expected values from the Python `mmh3` package: hash128(data, seed=0, x64arch=True).
    @Test(
        "matches the reference implementation, however the input is chunked",
        arguments: [
            ([], "00000000000000000000000000000000"),
            (Array("a".utf8), "85555565f6597889e6b53a48510e895a"),
            (Array("hello world".utf8), "533f6046eb7f610eab97467d60eb63b1"),
            (Array(0..<40), "c3a054d8418c8064a001ca30974c12ad"),
        ] as [([UInt8], String)]
    )
    func referenceVectors(bytes: [UInt8], expected: String) {
        for chunk in [1, 3, 7, 16, 17, 64] {
            #expect(hash(bytes, chunk: chunk) == expected, "chunk size \(chunk)")
        }
    }
}
