import Foundation

#if LMCACHE_FUZZING
/// libFuzzer's driver (a build with `-sanitize=fuzzer`, from `scripts/fuzz`): it owns the command
/// line (corpus directories, `-max_total_time`, …), so the target comes from
/// `LMCACHE_FUZZ_TARGET`. SwiftPM names an executable's entry point itself, so libFuzzer's own
/// `main` is not used; this one hands over to its driver.
@main
struct FuzzMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        _ = target  // Refuse a missing or unknown target before fuzzing starts.
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzTestOneInput))
    }
}

@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

private let target: FuzzTarget = {
    guard let name = ProcessInfo.processInfo.environment["LMCACHE_FUZZ_TARGET"], let target = FuzzTarget(rawValue: name)
    else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        FileHandle.standardError.write(Data("LMCACHE_FUZZ_TARGET must name one of: \(names)\n".utf8))
        exit(2)
    }
    return target
}()

/// One input, from libFuzzer (also exported under the name its own `main` would call).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    target.run(UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size))
    return 0
}
#else
/// Without libFuzzer: replays saved inputs (a crash found by `scripts/fuzz`, with a plain or a
/// sanitizer build) and writes the seed corpus.
///
///     lmcache-fuzz list
///     lmcache-fuzz seeds DIR            # DIR/TARGET/seed-N for every target
///     lmcache-fuzz TARGET FILE...       # runs TARGET on each file
@main
struct FuzzReplay {
    static func main() throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch arguments.first {
        case "list":
            for target in FuzzTarget.allCases { print(target.rawValue) }
        case "seeds" where arguments.count == 2:
            for target in FuzzTarget.allCases {
                let directory = URL(filePath: arguments[1]).appending(path: target.rawValue)
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                for (index, seed) in target.seeds.enumerated() {
                    try Data(seed).write(to: directory.appending(path: "seed-\(index)"))
                }
            }
        case let name? where arguments.count >= 2:
            guard let target = FuzzTarget(rawValue: name) else {
                throw ReplayError("unknown target \(name); `lmcache-fuzz list` names them")
            }
            for path in arguments.dropFirst() {
                let data = try Data(contentsOf: URL(filePath: path))
                data.withUnsafeBytes { target.run($0) }
                print("ok \(path)")
            }
        default:
            throw ReplayError("usage: lmcache-fuzz list | seeds DIR | TARGET FILE...")
        }
    }
}

struct ReplayError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
#endif
