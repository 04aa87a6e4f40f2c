/// A bounds-checked little-endian reader over a byte buffer that it does not own.
///
/// Every read checks the remaining length first and throws ``GGUFError/Code/truncated`` without
/// moving the cursor when the bytes are not there.
@safe struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    /// The offset of the next byte to read; always `0 ... bytes.count`.
    private(set) var offset: Int

    init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0) {
        precondition(offset >= 0 && offset <= bytes.count)
        unsafe self.bytes = unsafe bytes
        self.offset = offset
    }

    /// The number of bytes in the buffer.
    var size: Int { unsafe bytes.count }

    /// The number of bytes left after ``offset``.
    var remaining: Int {
        // Cannot underflow: offset <= bytes.count is an invariant.
        unsafe bytes.count - offset
    }

    /// Checks that `count` more bytes are present.
    func require(_ count: Int, _ what: @autoclosure () -> String) throws(GGUFError) {
        guard count >= 0, count <= remaining else {
            throw GGUFError(
                .truncated,
                "file ends while reading \(what()) (needs \(count) bytes, \(remaining) left of \(size))",
                offset: offset
            )
        }
    }

    mutating func skip(_ count: Int, _ what: @autoclosure () -> String) throws(GGUFError) {
        try require(count, what())
        offset += count  // Cannot overflow: count <= remaining.
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws(GGUFError) -> T {
        try require(MemoryLayout<T>.size, what())
        // Safe: the bytes are present (checked above); loadUnaligned has no alignment requirement.
        let raw = unsafe bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: raw)
    }

    mutating func readFloat(_ what: @autoclosure () -> String) throws(GGUFError) -> Float {
        Float(bitPattern: try read(UInt32.self, what()))
    }

    mutating func readDouble(_ what: @autoclosure () -> String) throws(GGUFError) -> Double {
        Double(bitPattern: try read(UInt64.self, what()))
    }

    /// Reads a 64-bit length and returns it as an `Int` no larger than the bytes left.
    mutating func readLength(_ what: @autoclosure () -> String) throws(GGUFError) -> Int {
        let start = offset
        let raw = try read(UInt64.self, what())
        guard let length = Int(exactly: raw), length <= remaining else {
            offset = start
            throw GGUFError(
                .limitExceeded,
                "length \(raw) of \(what()) exceeds the \(remaining - 8) bytes left in the file",
                offset: start
            )
        }
        return length
    }

    /// Reads a GGUF string: a 64-bit byte length, then that many bytes of UTF-8.
    mutating func readString(_ what: @autoclosure () -> String, maxLength: Int = .max) throws(GGUFError) -> String {
        let start = offset
        let length = try readLength(what())
        guard length <= maxLength else {
            offset = start
            throw GGUFError(
                .limitExceeded,
                "\(what()) is \(length) bytes long; at most \(maxLength) are allowed",
                offset: start
            )
        }
        // Safe: readLength checked that `length` bytes follow `offset`.
        let slice = unsafe UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        guard let string = unsafe String(validating: slice.assumingMemoryBound(to: UInt8.self), as: UTF8.self) else {
            offset = start
            throw GGUFError(.invalidUTF8, "\(what()) is not valid UTF-8", offset: start)
        }
        offset += length
        return string
    }

    /// Reads `count` fixed-size little-endian values into an array (the caller checked that the
    /// bytes are present).
    mutating func readArray<T: BitwiseCopyable>(
        of _: T.Type,
        count: Int,
        _ what: @autoclosure () -> String
    )
        throws(GGUFError) -> [T]
    {
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.size)
        guard !overflow else {
            throw GGUFError(.limitExceeded, "\(what()) has too many elements (\(count))", offset: offset)
        }
        try require(byteCount, what())
        #if _endian(big)
        #error("GGUF files are little-endian; the bulk array reader assumes a little-endian host")
        #endif
        let source = unsafe bytes.baseAddress
        let start = offset
        let array = unsafe [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            if byteCount > 0, let source = unsafe source, let destination = buffer.baseAddress {
                // Safe: `byteCount` bytes are present at `start` (checked above), the destination
                // has room for `count` values of T, and T is bitwise-copyable with the file's
                // little-endian layout on this little-endian host.
                unsafe UnsafeMutableRawPointer(destination).copyMemory(from: source + start, byteCount: byteCount)
            }
            initialized = count
        }
        offset += byteCount
        return array
    }
}
