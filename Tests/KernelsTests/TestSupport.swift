import Foundation
import Testing

/// The repository root (three levels above this file).
let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The default model: `LMCACHE_TEST_MODEL`, else `~/.cache/lmcache/models/gemma-3-270m-Q4_K_M.gguf`.
/// Records a failure (never a silent skip) when the file is missing.
func testModelPath() throws -> String {
    let path = ProcessInfo.processInfo.environment["LMCACHE_TEST_MODEL"]
        ?? FileManager.default.homeDirectoryForCurrentUser
        .appendingPathComponent(".cache/lmcache/models/gemma-3-270m-Q4_K_M.gguf").path
    try #require(
        FileManager.default.fileExists(atPath: path),
        "test model not found at \(path): run scripts/fetch-model (or set LMCACHE_TEST_MODEL)")
    return path
}

/// Runs `python3 script arguments…` from the repository root; fails the test when it exits non-zero.
func runPython(_ script: String, _ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", repositoryRoot.appendingPathComponent(script).path] + arguments
    process.currentDirectoryURL = repositoryRoot
    let errors = Pipe()
    process.standardError = errors
    try process.run()
    let message = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    try #require(
        process.terminationStatus == 0,
        "python3 \(script) failed (install scripts/python-requirements.txt): \(String(decoding: message, as: UTF8.self))")
}

/// A fresh temporary directory.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("lmcache-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
