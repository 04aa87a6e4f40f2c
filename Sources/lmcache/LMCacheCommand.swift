import ArgumentParser

@main
struct LMCacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lmcache",
        abstract: "A KV-cache layer for LLM inference, with its own CPU engine for GGUF models."
    )
}
