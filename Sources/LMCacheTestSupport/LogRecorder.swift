package import Logging
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// Log lines kept in memory, for tests that assert what a component logged: each line is the
/// level, the message and the metadata.
package final class LogRecorder: Sendable {
    private let lines = Mutex<[String]>([])

    package init() {}

    /// A logger that records here, from level `debug` up.
    package var logger: Logger {
        Logger(label: "test.recorded") { _ in Handler(recorder: self) }
    }

    /// The lines recorded so far.
    package var all: [String] { lines.withLock { $0 } }

    /// Whether some line contains `text`.
    package func contains(_ text: String) -> Bool { lines.withLock { $0.contains { $0.contains(text) } } }

    private struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            recorder.lines.withLock { $0.append("\(event.level) \(event.message) \(event.metadata ?? [:])") }
        }
    }
}
