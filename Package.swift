// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "meetperry",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "receiver", targets: ["ReceiverCommand"]),
        .executable(name: "applier", targets: ["ApplierCommand"]),
        .executable(name: "reporter", targets: ["ReporterCommand"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // libpq, from Debian's libpq-dev, for the applier and the reporter.
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // The one small, safe wrapper over libpq.
        .target(name: "LibPQ", dependencies: ["CLibPQ"]),
        // libnats, from Debian's libnats-dev, for the JetStream mode of the receiver and the applier.
        .systemLibrary(
            name: "CLibNATS",
            pkgConfig: "libnats",
            providers: [.apt(["libnats-dev"])]
        ),
        // The one small, safe wrapper over libnats: connection, JetStream publish with acks, pull consumers.
        .target(name: "LibNATS", dependencies: ["CLibNATS"]),
        // The stream, subject and consumer the receiver and the applier share in JetStream mode, and making sure they exist.
        .target(name: "JetStreamSetup", dependencies: ["LibNATS", .product(name: "Logging", package: "swift-log")]),
        // The event log's columns and their one decoder, and what each program needs of the schema; shared by applier and reporter.
        .target(name: "DatabaseSchema", dependencies: ["LibPQ", "WebhookModel"]),
        // The task rules as a pure function of a task's events, and an event's identity; shared by applier, reporter and receiver.
        .target(name: "TaskModel", dependencies: ["WebhookModel", .product(name: "Crypto", package: "swift-crypto")]),
        // The event store and the applier's batching loop.
        .target(
            name: "ApplierCore",
            dependencies: [
                "WebhookModel", "TaskModel", "LibPQ", "DatabaseSchema", "FileIO", "LibNATS", "JetStreamSetup", "ArchiveSegments",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // GET /metrics for a program whose work is not HTTP (the applier).
        .target(
            name: "MetricsEndpoint",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "ApplierCommand",
            dependencies: [
                "ApplierCore", "CommandSupport", "LibPQ", "MetricsEndpoint",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The archive's segments: their names, which are pending or verified, and retention; for the receiver and the applier.
        .target(name: "ArchiveSegments", dependencies: ["FileIO", "WebhookModel"]),
        // syncfs(2), which Swift's Glibc module does not export.
        .target(name: "CSystemShims"),
        // Whole writes, syncfs and errno-carrying errors, shared by the three programs' file I/O.
        .target(name: "FileIO", dependencies: ["CSystemShims"]),
        // Windows, the four lists, file names, atomic files and the report query.
        .target(
            name: "ReporterCore",
            dependencies: [
                "WebhookModel", "TaskModel", "LibPQ", "DatabaseSchema", "FileIO",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "ReporterCommand",
            dependencies: [
                "ReporterCore", "CommandSupport", "LibPQ", "WebhookModel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The webhook model, JSON parsing, timestamps and the NDJSON stream codec.
        .target(name: "WebhookModel"),
        // Flag/environment settings and stderr logging, shared by the three programs.
        .target(
            name: "CommandSupport",
            dependencies: [
                "JetStreamSetup", "LibPQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The HTTP application, the ordered output writer and signature checks.
        .target(
            name: "ReceiverCore",
            dependencies: [
                "WebhookModel", "TaskModel", "FileIO", "LibNATS", "JetStreamSetup", "MetricsEndpoint", "ArchiveSegments",
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                // ServerQuiescingHelper, for a socket handed over by systemd (InheritedSocketServer).
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "ReceiverCommand",
            dependencies: [
                "ReceiverCore", "CommandSupport", "FileIO", "JetStreamSetup",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Helpers for tests that run the real executables: processes, pipes, HTTP.
        .target(name: "TestSupport", dependencies: ["LibPQ", "WebhookModel"], path: "Tests/TestSupport"),
        .testTarget(name: "WebhookModelTests", dependencies: ["WebhookModel", "TestSupport"]),
        .testTarget(
            name: "LibNATSTests",
            dependencies: ["LibNATS", "JetStreamSetup", "TestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "ReceiverTests",
            dependencies: [
                "ReceiverCore", "WebhookModel", "TestSupport", "ReceiverCommand",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "ApplierTests",
            dependencies: ["ApplierCore", "ArchiveSegments", "TaskModel", "WebhookModel", "LibPQ", "TestSupport", "ApplierCommand", "ReceiverCommand"]
        ),
        .testTarget(
            name: "PipelineTests",
            dependencies: ["LibPQ", "TestSupport", "WebhookModel", "CommandSupport", "ReceiverCommand", "ApplierCommand", "ReporterCommand"]
        ),
        .testTarget(
            name: "ScaleOutTests",
            dependencies: ["LibNATS", "LibPQ", "TaskModel", "TestSupport", "WebhookModel", "ReceiverCommand", "ApplierCommand"]
        ),
        .testTarget(
            name: "ReporterTests",
            dependencies: [
                "ReporterCore", "TaskModel", "WebhookModel", "LibPQ", "TestSupport", "ReporterCommand", "ApplierCommand",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
