import ArgumentParser
import LMCacheBenchmarks

@main
struct LMCacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lmcache",
        abstract: "A KV-cache layer for LLM inference, with its own CPU engine for GGUF models.",
        subcommands: [
            ServeCommand.self, ConfigCommand.self, BenchCommand.self, InspectCommand.self, GenerateCommand.self,
            PerplexityCommand.self, ServerCommand.self, ControllerCommand.self, DebugCommand.self,
        ]
    )
}

/// `lmcache inspect …`: look at what the cache computes.
struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what the cache computes for given input.",
        subcommands: [InspectKeysCommand.self]
    )
}
