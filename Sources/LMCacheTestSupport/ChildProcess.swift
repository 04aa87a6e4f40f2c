package import Foundation

/// Runs blocking work on a thread of its own and returns its result.
///
/// Swift concurrency runs tasks on one cooperative thread per core: two on the CI machine. A test
/// that waits there for a child process (`redis-cli`, a server shutting down) holds one of them, and
/// two such waits stall every other test in the process, timers included. Waits on other
/// processes go through this instead.
package func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}

/// Runs a program to its end without holding a cooperative thread; returns its exit status and
/// its standard output (with standard error too when `mergeStandardError` is set; otherwise that
/// is discarded).
package func runChildProcess(
    _ path: String, _ arguments: [String], mergeStandardError: Bool = false
) async throws -> (status: Int32, output: String) {
    try await onOwnThread {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = mergeStandardError ? pipe : FileHandle.nullDevice
        try process.run()
        // Drained while the program runs, so that a full pipe cannot block it.
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

extension Process {
    /// Waits until the process has exited, without holding a cooperative thread (a server's
    /// graceful shutdown can take a while on a loaded machine).
    package func exited() async {
        let process = UncheckedProcess(process: self)
        _ = try? await onOwnThread { process.process.waitUntilExit() }
    }
}

/// `Process` is a reference the caller owns; handing it to one waiting thread is safe.
private struct UncheckedProcess: @unchecked Sendable {
    let process: Process
}

/// A program this package builds (`lmcache`, `lmcache_server`): it lies next to the test bundle in
/// the build directory, when the test target depends on it.
package func builtExecutable(_ name: String) -> URL {
    URL(filePath: CommandLine.arguments[0]).deletingLastPathComponent().appending(path: name)
}
