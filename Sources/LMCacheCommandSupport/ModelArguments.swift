package import ArgumentParser
import Foundation
package import GGUF
package import Inference

/// `--model PATH`, shared by the engine commands.
package struct ModelArguments: ParsableArguments {
    /// Where `scripts/fetch-model` puts the default model.
    package static var defaultModelPath: String {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return home + "/.cache/lmcache/models/gemma-3-270m-Q4_K_M.gguf"
    }

    @Option(help: "GGUF model file (default: the Gemma 3 270M file that scripts/fetch-model installs).")
    package var model: String = ModelArguments.defaultModelPath

    @Option(
        help: """
            CPU threads for the engine (default: LMCACHE_THREADS, else the CPUs this process may use: \
            its affinity mask capped by its cgroup CPU quota).
            """
    )
    package var threads: Int?

    package init() {}

    package func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, not \(threads)") }
    }

    /// Applies `--threads`; call before loading a model.
    package func applyThreads() throws {
        if let threads { try EngineThreads.set(threads) }
    }

    /// Maps the file and loads the model; shows progress on a terminal.
    package func load() throws -> (file: GGUFFile, model: any LanguageModel, seconds: Double) {
        try applyThreads()
        let interactive = isatty(STDERR_FILENO) != 0
        if interactive { FileHandle.standardError.write(Data("loading \(model)…".utf8)) }
        let start = DispatchTime.now()
        guard FileManager.default.fileExists(atPath: model) else {
            if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
            throw ValidationError("model file \(model) does not exist (scripts/fetch-model installs the default one)")
        }
        let file = try GGUFFile(contentsOf: model)
        let loaded = try loadModel(from: file)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        if interactive {
            FileHandle.standardError.write(Data(String(format: " done in %.0f ms\n", seconds * 1000).utf8))
        }
        return (file, loaded, seconds)
    }
}

/// Seconds since an arbitrary point, for timing.
package func monotonicSeconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

/// Prints one JSON object with sorted keys.
package func printJSON(_ object: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}
