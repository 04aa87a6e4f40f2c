// swift-tools-version: 6.2
//
// LMCache for Swift: a KV-cache layer for LLM inference, with its own CPU inference engine.
// Layers (arrows point down only):
// LMCacheCore ◀ LMCacheStorage ◀ LMCacheRemote, LMCacheServer ◀ LMCacheP2P;
// GGUF ◀ Tokenizers, Kernels ◀ Inference ◀ OpenAIServer; LMCacheStorage ◀ Inference (the KV connector);
// LMCacheWire ◀ the network targets;
// LMCacheCommandSupport ◀ LMCacheBenchmarks (`lmcache bench`) ◀ lmcache; LMCacheServer ◀ lmcache_server.
// Linux only (Glibc, cgroups, Debian's libopenblas and libzstd), so no Apple platform is declared.
// The `FastKernels` trait (on by default) holds the only unsafe flags. See docs/ARCHITECTURE.md.

import PackageDescription

/// Settings every target shares: Swift 6 mode, explicit existentials, explicit imports.
let commonSwiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    // Internal invariant checks (`_checkInvariants()`); CI turns them on with `-Xswiftc -DLMCACHE_INTERNAL_CHECKS`.
]

/// The trait that optimizes the math kernels, C codecs and checksum in every build configuration.
let fastKernels = "FastKernels"

/// The math kernels: `-Ounchecked` under `FastKernels` (see the trait).
let kernelSwiftSettings: [SwiftSetting] = commonSwiftSettings + [
    .unsafeFlags(["-Ounchecked"], .when(traits: [fastKernels]))
]

/// The C targets: `-O3` under `FastKernels`, in debug builds too (SwiftPM gives C `-O0` in debug and `-O2` in release).
/// Release builds also drop the frame pointer SwiftPM keeps in every function (its `-fno-omit-frame-pointer` comes
/// after these flags, hence the flag to the compiler itself): it takes a register from loops that need all of them
/// (the lossless decoder's four bit readers: 2.8 against 3.35 GB/s a core). Debuggers and `perf --call-graph dwarf`
/// unwind them through their unwind tables; debug builds (CI's sanitizer and fuzzing runs) keep the frame pointer
/// for the sanitizers' fast stack traces.
let fastCSettings: [CSetting] = [
    .unsafeFlags(["-O3"], .when(traits: [fastKernels])),
    .unsafeFlags(["-Xclang", "-mframe-pointer=none"], .when(configuration: .release, traits: [fastKernels])),
]

let package = Package(
    name: "lmcache-swift",
    products: [
        .library(name: "LMCacheCore", targets: ["LMCacheCore"]),
        .library(name: "LMCacheStorage", targets: ["LMCacheStorage"]),
        .library(name: "GGUF", targets: ["GGUF"]),
        .library(name: "Kernels", targets: ["Kernels"]),
        .library(name: "Tokenizers", targets: ["Tokenizers"]),
        .library(name: "Inference", targets: ["Inference"]),
        .library(name: "LMCacheConnector", targets: ["LMCacheConnector"]),
        .library(name: "LMCacheServing", targets: ["LMCacheServing"]),
        .library(name: "LMCacheWire", targets: ["LMCacheWire"]),
        .library(name: "LMCacheRemote", targets: ["LMCacheRemote"]),
        .library(name: "LMCacheServer", targets: ["LMCacheServer"]),
        .library(name: "OpenAIServer", targets: ["OpenAIServer"]),
        .library(name: "LMCacheP2P", targets: ["LMCacheP2P"]),
        .executable(name: "lmcache", targets: ["lmcache"]),
        .executable(name: "lmcache_server", targets: ["lmcache_server"]),
    ],
    traits: [
        // On by default, for this package and for packages that depend on it; `traits: []` in a
        // dependent's `.package(…)` (or `swift build --disable-default-traits` here) turns it off.
        // SwiftPM 6.2 and later accept unsafe flags in a dependency whose manifest says 6.2 or later;
        // older ones reject them whatever their condition, and cannot read this manifest anyway.
        .trait(
            name: fastKernels,
            description: """
                Kernels with -Ounchecked and the C kernels, codecs and checksum with -O3, in debug builds \
                too, so that debug-build tests on the real model run in seconds.
                """
        ),
        .default(enabledTraits: [fastKernels]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // TLS (BoringSSL) for rediss://, lm:// and P2P links; only LMCacheTLS and the programs link it.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // The OpenAI-compatible server; no traits (swift-configuration and full Foundation are not needed).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // MARK: Cache
        .target(
            name: "LMCacheCore",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // CRC-32C with the SSE4.2 instruction (checked at run time): the disk tier's payload checksum.
        .target(name: "CChecksum", cSettings: fastCSettings),
        // KV codecs behind `remote_serde` / `local_disk_serde`; zstd from Debian's libzstd-dev.
        .target(
            name: "CKVCodec",
            cSettings: fastCSettings,
            linkerSettings: [.linkedLibrary("zstd")]
        ),
        .target(
            name: "LMCacheStorage",
            dependencies: [
                "LMCacheCore",
                "CChecksum",
                "CKVCodec",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),

        // MARK: Network
        .target(
            name: "LMCacheWire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio")
            ],
            swiftSettings: commonSwiftSettings
        ),
        .target(
            name: "LMCacheRemote",
            dependencies: [
                "LMCacheCore",
                "LMCacheStorage",
                "LMCacheWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        .target(
            name: "LMCacheServer",
            dependencies: [
                "LMCacheCore",
                "LMCacheStorage",
                "LMCacheWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // TLS hooks (`ConnectionSecurity`) for the network targets, which do not depend on it, so
        // the fuzz build does not compile BoringSSL.
        .target(
            name: "LMCacheTLS",
            dependencies: [
                "LMCacheCore", "LMCacheWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // Peer-to-peer sharing: the P2P tier, the chunk source peers fetch from, the controller agent.
        .target(
            name: "LMCacheP2P",
            dependencies: [
                "LMCacheCore", "LMCacheStorage", "LMCacheWire", "LMCacheRemote", "LMCacheServer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),

        // MARK: Engine
        .target(name: "GGUF", swiftSettings: commonSwiftSettings + [.strictMemorySafety()]),
        // BLAS for the batched (prefill) matrix products: Debian `libopenblas-dev`.
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS"),
        // The innermost quantized dot products with AVX2 variants picked at run time (Swift has no
        // per-function target attributes); optimized in debug builds too.
        .target(name: "CKernels", cSettings: fastCSettings),
        .target(
            name: "Kernels",
            dependencies: ["GGUF", "CKernels", "COpenBLAS"],
            swiftSettings: kernelSwiftSettings
        ),
        .target(name: "Tokenizers", dependencies: ["GGUF"], swiftSettings: commonSwiftSettings + [.strictMemorySafety()]),
        // The engine knows the cache only through its `KVCacheConnector` protocol (and the shared
        // `KVLayout` of LMCacheCore); it does not import the tiers.
        .target(
            name: "Inference",
            dependencies: [
                "GGUF", "Kernels", "Tokenizers", "LMCacheCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // The seam's implementations: prefix reuse and blending over the tiers, the cache an engine is
        // built with (`EngineCache`), and the offline `LLM` API.
        .target(
            name: "LMCacheConnector",
            dependencies: [
                "Inference", "LMCacheStorage", "LMCacheCore", "Kernels", "Tokenizers", "GGUF",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: commonSwiftSettings
        ),

        // MARK: Serving
        // The OpenAI request bodies, their checks and the chat template: no HTTP, so the fuzz build
        // links them.
        .target(name: "OpenAIProtocol", swiftSettings: commonSwiftSettings),
        .target(
            name: "OpenAIServer",
            dependencies: [
                "OpenAIProtocol", "Inference", "Tokenizers", "LMCacheCore", "LMCacheStorage",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),

        // MARK: Command line
        // What `lmcache`'s commands share: `--model`, `--config`/`--set`, logging set-up, JSON output.
        .target(
            name: "LMCacheCommandSupport",
            dependencies: [
                "GGUF", "Inference", "LMCacheCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // The cache of a serving process built once from configuration: the engine's cache with its
        // remote tiers (over TLS where asked) and the peers, with the services to run beside the server.
        .target(
            name: "LMCacheServing",
            dependencies: [
                "LMCacheConnector", "Inference", "Tokenizers", "LMCacheCore", "LMCacheStorage", "LMCacheRemote",
                "LMCacheServer", "LMCacheP2P", "LMCacheTLS", "LMCacheWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // `lmcache bench …`: the storage, engine, TTFT, blending and serde benchmarks (docs/benchmarks.md).
        .target(
            name: "LMCacheBenchmarks",
            dependencies: [
                "LMCacheCommandSupport", "LMCacheServing",
                "LMCacheCore", "LMCacheStorage", "LMCacheWire", "LMCacheRemote", "LMCacheServer",
                "GGUF", "Kernels", "CKernels", "Tokenizers", "Inference", "LMCacheConnector", "OpenAIServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // `lmcache bench ttft`: a streaming HTTP client timing the first token.
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),

        // MARK: Executables
        .executableTarget(
            name: "lmcache",
            dependencies: [
                "LMCacheCommandSupport",
                "LMCacheBenchmarks",
                "LMCacheServing",
                "LMCacheCore",
                "LMCacheStorage",
                "LMCacheRemote",
                "LMCacheServer",
                "LMCacheP2P",
                "LMCacheTLS",
                "GGUF",
                "Kernels",
                "Tokenizers",
                "Inference",
                "LMCacheConnector",
                "OpenAIServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        .executableTarget(
            name: "lmcache_server",
            dependencies: [
                "LMCacheServer",
                "LMCacheCore",
                "LMCacheTLS",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // The decoders of outside bytes as fuzz targets: libFuzzer's entry in a build with
        // -sanitize=fuzzer and LMCACHE_FUZZING (scripts/fuzz), else a tool that replays inputs.
        .executableTarget(
            name: "lmcache-fuzz",
            dependencies: [
                "GGUF", "LMCacheCore", "LMCacheStorage", "LMCacheRemote", "LMCacheWire", "OpenAIProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: commonSwiftSettings
        ),

        // MARK: Tests
        // Fixtures shared by test targets: a GGUF file builder, the test model's location, temporary
        // directories, child processes, free ports, polling, an in-process `lm://` server.
        .target(
            name: "LMCacheTestSupport",
            dependencies: [
                "LMCacheServer", "LMCacheConnector", "Inference", "LMCacheCore", "LMCacheStorage", "GGUF", "Tokenizers",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(name: "LMCacheCoreTests", dependencies: ["LMCacheCore"], swiftSettings: commonSwiftSettings),
        .testTarget(
            name: "LMCacheStorageTests",
            dependencies: [
                "LMCacheStorage", "LMCacheCore", "LMCacheTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(
            name: "LMCacheWireTests",
            dependencies: [
                "LMCacheWire",
                "LMCacheTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(
            name: "LMCacheServerTests",
            dependencies: [
                "LMCacheServer",
                "LMCacheTestSupport",
                "lmcache_server",
                "LMCacheRemote",
                "LMCacheWire",
                "LMCacheStorage",
                "LMCacheCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // TLS and access tokens over real sockets, certificates made by `openssl` at test time.
        .testTarget(
            name: "LMCacheTLSTests",
            dependencies: [
                "LMCacheTLS", "LMCacheRemote", "LMCacheServer", "LMCacheWire", "LMCacheCore", "LMCacheStorage",
                "LMCacheP2P", "LMCacheTestSupport", "lmcache_server",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        // The remote tiers (`lm://`, Redis, Redis Cluster) and their chunk frame, against an
        // in-process `lm://` server, `lmcache_server` processes and real `redis-server` processes.
        .testTarget(
            name: "LMCacheRemoteTests",
            dependencies: [
                "LMCacheRemote",
                "LMCacheTestSupport",
                "LMCacheServer",
                "lmcache_server",
                "LMCacheWire",
                "LMCacheStorage",
                "LMCacheCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "LMCacheTestSupport"], swiftSettings: commonSwiftSettings),
        .testTarget(
            name: "KernelsTests",
            dependencies: ["Kernels", "CKernels", "GGUF", "LMCacheTestSupport"],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(
            name: "TokenizersTests",
            dependencies: ["Tokenizers", "GGUF", "LMCacheTestSupport"],
            resources: [.copy("Resources")],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(
            name: "InferenceTests",
            dependencies: ["Inference", "GGUF", "Kernels", "Tokenizers", "LMCacheCore", "LMCacheTestSupport"],
            resources: [.copy("Resources")],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(
            name: "LMCacheConnectorTests",
            dependencies: [
                "LMCacheConnector", "Inference", "GGUF", "Tokenizers", "LMCacheCore", "LMCacheStorage", "LMCacheTestSupport",
            ],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(
            name: "OpenAIProtocolTests",
            dependencies: ["OpenAIProtocol"],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(
            name: "OpenAIServerTests",
            dependencies: [
                "OpenAIServer", "Inference", "LMCacheConnector", "GGUF", "Tokenizers", "LMCacheCore", "LMCacheStorage",
                "LMCacheTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Resources"],
            swiftSettings: commonSwiftSettings
        ),
        // Controller and peers: in-process services and real `lmcache serve` processes, also in
        // network namespaces. Runs with the network suites (scripts/test).
        .testTarget(
            name: "LMCacheP2PTests",
            dependencies: [
                "LMCacheP2P", "LMCacheServer", "LMCacheWire", "LMCacheRemote", "LMCacheStorage", "LMCacheCore",
                "lmcache", "LMCacheTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: commonSwiftSettings
        ),
        .testTarget(
            name: "LMCacheCLITests",
            dependencies: ["lmcache", "lmcache_server", "LMCacheCore", "LMCacheStorage", "LMCacheTestSupport"],
            swiftSettings: commonSwiftSettings
        ),
    ]
)
