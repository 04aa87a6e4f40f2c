package import ArgumentParser

/// `lmcache bench …`: measurements printed as ratios against a baseline measured in the same run.
package struct BenchCommand: AsyncParsableCommand {
    package static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the cache and the engine against baselines measured in the same run.",
        subcommands: [
            BenchStorageCommand.self, BenchEngineCommand.self, BenchTTFTCommand.self, BenchBlendCommand.self,
            BenchSerdeCommand.self, BenchKernelsCommand.self,
        ]
    )

    package init() {}
}
