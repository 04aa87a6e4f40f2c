package import Foundation

/// Where the tests find the default model (Gemma 3 270M, Q4_K_M).
///
/// `LMCACHE_TEST_MODEL` names the file; otherwise `~/.cache/lmcache/models/gemma-3-270m-Q4_K_M.gguf`.
/// A test that needs the model fails (never skips) when the file is missing.
package enum TestModel {
    package static var path: String {
        if let path = ProcessInfo.processInfo.environment["LMCACHE_TEST_MODEL"], !path.isEmpty {
            return path
        }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return home + "/.cache/lmcache/models/gemma-3-270m-Q4_K_M.gguf"
    }

    /// The path if the file exists, else a message that tells how to get it.
    package static func requirePath() throws -> String {
        let path = self.path
        guard FileManager.default.fileExists(atPath: path) else {
            throw MissingModel(path: path)
        }
        return path
    }

    package struct MissingModel: Error, CustomStringConvertible {
        package let path: String
        package var description: String {
            "test model not found at \(path): run scripts/fetch-model (or set LMCACHE_TEST_MODEL to a copy of "
                + "gemma-3-270m-Q4_K_M.gguf)"
        }
    }
}

/// A fresh directory under the system's temporary directory, removed by ``remove()`` or when the
/// value goes away.
package final class TemporaryDirectory: Sendable {
    package let url: URL

    /// Creates `<label>-<random>` in the temporary directory.
    package init(_ label: String = "lmcache-tests") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { remove() }

    /// The directory's path.
    package var path: String { url.path }

    /// Removes the directory and everything in it.
    package func remove() { try? FileManager.default.removeItem(at: url) }

    /// The names of the directory's entries, sorted.
    package func files() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    /// Writes `bytes` to a file in the directory and returns its path.
    package func write(_ bytes: [UInt8], name: String = "test.gguf") throws -> String {
        let file = url.appendingPathComponent(name)
        try Data(bytes).write(to: file)
        return file.path
    }
}
