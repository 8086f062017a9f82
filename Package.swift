// swift-tools-version:6.0
import PackageDescription

/// One set of Swift settings for every target (Swift 6 language mode comes with the tools version).
/// `-fno-math-errno` lets the optimizer vectorize loops that call sqrtf (Adam, Adagrad): without it
/// each sqrtf may set errno and the loop runs one element at a time (3x slower, measured).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .unsafeFlags(["-Xcc", "-fno-math-errno"]),
]

// Linux is what builds: the sources call Glibc (mmap, fsync, signals, /proc) unconditionally and
// link Debian's Open MPI and OpenBLAS; no other platform is declared.
let package = Package(
    name: "rec-dist",
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
        // The Communicator protocol, the 1-rank communicator, gradient sync.
        .target(name: "RecDistributed", dependencies: ["RecCore", "CIntrinsics"], swiftSettings: swiftSettings),
        // Test double: N ranks on threads of one process (InProcessGroup), for tests and debugging.
        .target(name: "RecDistributedTesting", dependencies: ["RecDistributed"], swiftSettings: swiftSettings),
        // MPICommunicator: the only Swift code that imports CMPI.
        .target(name: "RecMPI", dependencies: ["CMPI", "RecDistributed"], swiftSettings: swiftSettings),
        // Checkpoint files: safetensors, CRC-32, the checksummed file sink.
        .target(name: "RecCheckpoint", dependencies: ["RecCore", "RecData"], swiftSettings: swiftSettings),
        // Generated protobuf messages (committed; scripts/generate-*-protos.sh regenerate them):
        // onnx/ holds ONNX's, for `export --format onnx`; tensorboard/ TensorBoard's Event and
        // Summary, for `train --tensorboard`.
        .target(name: "RecProtos",
                dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
                exclude: ["onnx/onnx.proto3"]),
        // The training loop, evaluation, what a training checkpoint holds, metrics log,
        // TensorBoard event files, benchmark.
        .target(name: "RecTrainer",
                dependencies: ["RecCore", "RecData", "RecDistributed", "RecCheckpoint", "RecProtos",
                               .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                               .product(name: "Logging", package: "swift-log")],
                swiftSettings: swiftSettings),
        // Using a trained model: load it, predict, recommend, explain, export, report, baselines.
        .target(name: "RecInference",
                dependencies: ["RecCore", "RecData", "RecCheckpoint", "RecTrainer", "RecProtos",
                               .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                swiftSettings: swiftSettings),
        // The CLI: parsing, validation, exit codes.
        .executableTarget(name: "rec-dist",
                          dependencies: ["RecInference", "RecTrainer", "RecCheckpoint", "RecMPI", "RecData", "RecCore",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log")],
                          swiftSettings: swiftSettings),

        // Test support: a counting malloc (C), linked only into the test bundle.
        .target(name: "AllocationCounter"),

        .testTarget(name: "RecCoreTests", dependencies: ["RecCore"], swiftSettings: swiftSettings),
        .testTarget(name: "RecDataTests", dependencies: ["RecData"], swiftSettings: swiftSettings),
        .testTarget(name: "RecDistributedTests",
                    dependencies: ["RecDistributed", "RecDistributedTesting", "RecInference", "RecTrainer",
                                   "RecCheckpoint", "RecData", "RecCore"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "RecTrainerTests",
                    dependencies: ["RecTrainer", "RecCheckpoint", "RecDistributed", "RecData", "RecCore",
                                   .product(name: "Logging", package: "swift-log")],
                    swiftSettings: swiftSettings),
        .testTarget(name: "RecInferenceTests",
                    dependencies: ["RecInference", "RecTrainer", "RecData", "RecCore"],
                    swiftSettings: swiftSettings),
        // Guards that are not timed: no heap allocation per training step, the bytes each
        // gradient exchange path moves, nonblocking collectives against blocking ones.
        .testTarget(name: "PerformanceTests",
                    dependencies: ["RecTrainer", "RecDistributed", "RecDistributedTesting", "RecCore", "AllocationCounter"],
                    swiftSettings: swiftSettings),
        // End to end: runs the built rec-dist binary, also under real mpirun.
        .testTarget(name: "IntegrationTests", dependencies: ["rec-dist", "RecCore"], swiftSettings: swiftSettings),
    ]
)
