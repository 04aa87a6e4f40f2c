#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A whole file mapped read-only into memory; unmapped when the value is destroyed.
///
/// The mapping is `PROT_READ` and `MAP_PRIVATE`: nothing can write through it, so sharing the
/// bytes between threads is safe. The base address never changes for the life of the value.
@safe struct MappedFile: ~Copyable, @unchecked Sendable {
    // @unchecked Sendable: the mapping is read-only and immutable after init; the pointer is
    // only ever read through, so concurrent access from many threads cannot race.

    /// The mapped bytes (an empty buffer for an empty file, which maps nothing).
    let bytes: UnsafeRawBufferPointer

    /// Opens and maps `path`.
    /// - Throws: ``GGUFError/Code/ioError`` when the file cannot be opened, inspected or mapped.
    init(path: String) throws(GGUFError) {
        let fd = unsafe open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw GGUFError(.ioError, "cannot open '\(path)': \(Self.errnoDescription())")
        }
        defer { close(fd) }
        var info = stat()
        guard unsafe fstat(fd, &info) == 0 else {
            throw GGUFError(.ioError, "cannot stat '\(path)': \(Self.errnoDescription())")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw GGUFError(.ioError, "'\(path)' is not a regular file")
        }
        guard let size = Int(exactly: info.st_size), size >= 0 else {
            throw GGUFError(.ioError, "'\(path)' has an unrepresentable size \(info.st_size)")
        }
        if size == 0 {
            // mmap rejects a zero length; an empty buffer reads as a truncated file later.
            unsafe bytes = unsafe UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let address = unsafe mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let address = unsafe address, unsafe address != MAP_FAILED else {
            throw GGUFError(.ioError, "cannot map '\(path)' (\(size) bytes): \(Self.errnoDescription())")
        }
        // Safe: mmap returned a readable mapping of exactly `size` bytes that we own until deinit.
        unsafe bytes = unsafe UnsafeRawBufferPointer(start: UnsafeRawPointer(address), count: size)
    }

    deinit {
        if let base = unsafe bytes.baseAddress {
            // Safe: `base` and `count` are exactly what mmap returned; nothing uses them after deinit.
            unsafe munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }

    /// Asks the kernel to read the whole mapping ahead (`MADV_WILLNEED`); a hint, failures are ignored.
    func adviseWillNeed() {
        guard let base = unsafe bytes.baseAddress else { return }
        // Safe: advice on our own read-only mapping; it does not change its contents or lifetime.
        _ = unsafe madvise(UnsafeMutableRawPointer(mutating: base), bytes.count, MADV_WILLNEED)
    }

    private static func errnoDescription() -> String {
        let code = errno
        guard let text = unsafe strerror(code) else { return "errno \(code)" }
        return unsafe "\(String(cString: text)) (errno \(code))"
    }
}
