// swift-tools-version:6.0
import PackageDescription

/// One set of Swift settings for every target (Swift 6 language mode comes with the tools version).
/// `-fno-math-errno` lets the optimizer vectorize loops that call sqrtf (Adam, Adagrad): without it
/// each sqrtf may set errno and the loop runs one element at a time (3x slower, measured).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .unsafeFlags(["-Xcc", "-fno-math-errno"]),
]

let package = Package(
    name: "rec-dist",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "rec-dist", targets: ["rec-dist"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.28.0"),
    ],
    targets: [
        // System libraries: Open MPI and OpenBLAS from Debian's -dev packages.
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),

        // Compiler intrinsics (prefetch), header only.
        .systemLibrary(name: "CIntrinsics"),

        // Numerics and models: flat parameters, GEMM, layers, losses, optimizers, metrics, RNG.
        .target(name: "RecCore", dependencies: ["COpenBLAS", "CIntrinsics"], swiftSettings: swiftSettings),
        // Raw formats, the synthetic default dataset, per-rank sharding and batches.
        .target(name: "RecData", dependencies: ["RecCore"], swiftSettings: swiftSettings),
        // The Communicator protocol, the 1-rank and in-process N-rank communicators, gradient sync.
        .target(name: "RecDistributed", dependencies: ["RecCore", "CIntrinsics"], swiftSettings: swiftSettings),
        // MPICommunicator: the only Swift code that imports CMPI.
        .target(name: "RecMPI", dependencies: ["CMPI", "RecDistributed"], swiftSettings: swiftSettings),
        // Message code generated from .proto files (committed; scripts/generate-*-protos.sh
        // regenerate it): TensorBoard's Event and Summary.
        .target(name: "RecProtos",
                dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
                swiftSettings: swiftSettings),
        // The training loop, evaluation, checkpoints, metrics log, TensorBoard event files.
        .target(name: "RecTrainer",
                dependencies: ["RecCore", "RecData", "RecDistributed", "RecProtos",
                               .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: swiftSettings),
        // The CLI: parsing, validation, exit codes.
        .executableTarget(name: "rec-dist",
                          dependencies: ["RecTrainer", "RecMPI", "RecData", "RecCore",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log")],
                          swiftSettings: swiftSettings),

        // Test support: a counting malloc (C), linked only into the test bundle.
        .target(name: "AllocationCounter"),

        .testTarget(name: "RecCoreTests", dependencies: ["RecCore"], swiftSettings: swiftSettings),
        .testTarget(name: "RecDataTests", dependencies: ["RecData"], swiftSettings: swiftSettings),
        .testTarget(name: "RecDistributedTests",
                    dependencies: ["RecDistributed", "RecTrainer", "RecData", "RecCore"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "RecTrainerTests",
                    dependencies: ["RecTrainer", "RecDistributed", "RecData", "RecCore",
                                   .product(name: "Logging", package: "swift-log")],
                    swiftSettings: swiftSettings),
        // Guards that are not timed: no heap allocation per training step, the bytes each
        // gradient exchange path moves, nonblocking collectives against blocking ones.
        .testTarget(name: "PerformanceTests",
                    dependencies: ["RecTrainer", "RecDistributed", "RecCore", "AllocationCounter"],
                    swiftSettings: swiftSettings),
        // End to end: runs the built rec-dist binary, also under real mpirun.
        .testTarget(name: "IntegrationTests", dependencies: ["rec-dist"], swiftSettings: swiftSettings),
    ]
)
