import Foundation
import Testing

/// The repository root (three levels above this file).
let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

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
